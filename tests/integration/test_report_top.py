"""`report --top N` reads the top of the `rank` sorted set, not every brand
(issue 16), and still answers exactly what the full report's first N are.

The state is written straight into a real Redis in the store's key layout
(the `rank` sorted set, the `brands` set, one `bc:<brand>` hash a brand), so a
test can hold 20,000 brands, exact ties and scores past 2^53 in a second.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import redis.asyncio as aioredis

from processors.counting import CampaignRules
from streams.settings import Settings
from streams.store import EXACT_SCORE, RedisStore
from tests.support.services import REDIS

pytestmark = pytest.mark.integration

T0 = 1_760_529_600_000
Brands = dict[str, tuple[int, float | None]]  # id -> (exact gross, rank score)


def run(test: Callable[[RedisStore], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        campaign = f"top-{uuid.uuid4().hex[:8]}"
        rules = CampaignRules(campaign, T0, T0 + 86_400_000)
        store = RedisStore.from_url(REDIS, f"presale:{{{campaign}}}:", rules)
        try:
            await test(store)
        finally:
            await store.reset()
            await store.close()

    asyncio.run(main())


async def write(store: RedisStore, brands: Brands) -> None:
    """Each brand's gross in its hash, its score in `rank` (None: clicks only,
    so not in the rank), every id in `brands`."""
    p = store.prefix
    items = list(brands.items())
    for i in range(0, len(items), 5_000):
        async with store.client.pipeline(transaction=False) as pipe:
            for brand, (gross, score) in items[i : i + 5_000]:
                pipe.sadd(p + "brands", brand)
                pipe.hset(
                    p + "bc:" + brand,
                    mapping={"other:gross_gmv_fen": gross, "other:clicks": 1},
                )
                if score is not None:
                    pipe.zadd(p + "rank", {brand: score})
            await pipe.execute()


def ids(report: dict[str, Any]) -> list[str]:
    return [b["brand_id"] for b in report["brands"]]


async def hgetall_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


def test_top_reads_only_the_top_brands() -> None:
    """With 20,000 brands, `report(top=10)` reads 10 brand hashes, not 20,000.
    Before the fix it read every one (20,000 HGETALLs; 35 s and 1.6 GB at a
    million brands)."""

    async def test(store: RedisStore) -> None:
        rng = random.Random(16)
        brands: Brands = {}
        for i in range(20_000):
            gross = rng.randrange(1, 10**9)
            brands[f"b{i:05d}"] = (gross, float(gross))
        await write(store, brands)
        before = await hgetall_calls(store.client)
        report = await store.report(top=10)
        read = await hgetall_calls(store.client) - before
        # 10 brand hashes plus the head's eight (channels, milestones, dead
        # letters, meta; regions, the first hour by channel, minutes; one spare).
        assert read <= 10 + 8, read
        want = sorted(brands, key=lambda b: (-brands[b][0], b))[:10]
        assert ids(report) == want

    run(test)


@pytest.mark.parametrize("top", [1, 3, 7, 10, 25, 60, 100])
def test_top_is_the_full_reports_head(top: int) -> None:
    """Ties at the cut, brands with no sale (not in the rank) and brands with a
    free order (score 0): the top N is the full report's first N, every N."""

    async def test(store: RedisStore) -> None:
        rng = random.Random(top)
        brands: Brands = {}
        for i in range(40):
            gross = rng.choice([500, 500, 500, 700, 900, 1_000, 1_000])
            brands[f"s{rng.randrange(10**6):06d}-{i}"] = (gross, float(gross))
        for i in range(5):
            brands[f"f{i}"] = (0, 0.0)  # a free order: in the rank at 0
        for i in range(20):
            brands[f"c{rng.randrange(10**6):06d}-{i}"] = (0, None)  # clicks only
        await write(store, brands)
        full = await store.report()
        assert ids(await store.report(top=top)) == ids(full)[:top]
        assert ids(full) == sorted(brands, key=lambda b: (-brands[b][0], b))

    run(test)


def test_a_tie_at_the_cut_takes_the_first_ids() -> None:
    """500 brands with the same gross: the top 5 are the 5 smallest ids, read
    with 5 brand hashes (Redis orders equal scores by member)."""

    async def test(store: RedisStore) -> None:
        brands: Brands = {f"t{i:03d}": (1_000, 1_000.0) for i in range(500)}
        brands["z-first"] = (2_000, 2_000.0)
        await write(store, brands)
        before = await hgetall_calls(store.client)
        report = await store.report(top=6)
        assert await hgetall_calls(store.client) - before <= 6 + 8
        assert ids(report) == ["z-first", "t000", "t001", "t002", "t003", "t004"]

    run(test)


def test_near_equal_scores_past_2_53_are_ordered_exactly() -> None:
    """Past 2^53 fen a score can be a few ulps off the exact sum: the brands
    near the cut are read too and ordered by their exact sums."""

    async def test(store: RedisStore) -> None:
        big = int(EXACT_SCORE)
        brands: Brands = {
            "a": (big + 2, float(big + 2)),
            # its score rounded up past a's; its exact sum is below it
            "b": (big + 1, float(big + 4)),
            "c": (big - 10, float(big - 10)),
        }
        await write(store, brands)
        assert ids(await store.report(top=1)) == ["a"]
        assert ids(await store.report(top=2)) == ["a", "b"]

    run(test)


def test_no_brand_sold_yet() -> None:
    """Only clicks so far: the top N is the first N ids, found in O(N) memory."""

    async def test(store: RedisStore) -> None:
        brands: Brands = {f"k{i:05d}": (0, None) for i in range(25_000)}
        await write(store, brands)
        assert ids(await store.report(top=3)) == ["k00000", "k00001", "k00002"]

    run(test)


def test_distinct_rooms_and_brands_are_counted() -> None:
    """The atomic step adds each batch's livestream rooms to a HyperLogLog, and
    the live view reads brands (exact) and rooms (within 1%): the gauges of
    `presale_distinct_ids`. Before the fix no room count existed."""
    from processors.counting import plan_batch
    from processors.events import Event
    from streams.live import read_live

    async def test(store: RedisStore) -> None:
        records = [
            (
                "clicks:0",
                i,
                Event(
                    f"e{i}",
                    "click",
                    T0 + 1_000,
                    "u",
                    f"b{i % 50}",
                    channel="livestream",
                    room_id=f"r{i % 3_000}",
                ),
            )
            for i in range(6_000)
        ]
        applied = await store.applied_offsets(["clicks:0"])
        await store.apply(plan_batch(records, store.rules, applied), 1)
        view = await read_live(store.client, store.prefix, store.rules)
        assert view["brand_count"] == 50
        assert abs(view["room_count"] - 3_000) <= 30

    run(test)


CAMPAIGNS = ["d11-2025", "d11*", "d1?-2025", "d[1]1-2025", "d11", "d\\11"]


@pytest.mark.parametrize("campaign", ["d11*", "d1?-2025", "d[1]1-2025", "d\\11"])
def test_reset_deletes_only_its_own_keys(campaign: str) -> None:
    """`presale reset` of a campaign whose id holds glob characters deletes its
    own keys only. Before the fix `d11*` deleted `d11-2025`'s state too (the
    SCAN pattern escaped only the braces)."""

    async def main() -> None:
        tag = uuid.uuid4().hex[:6]
        names = [f"{tag}{c}" for c in CAMPAIGNS]
        client = aioredis.Redis.from_url(REDIS)
        try:
            for name in names:
                await client.set(Settings(campaign_id=name).redis_prefix + "meta", 1)
            target = Settings(campaign_id=f"{tag}{campaign}")
            store = RedisStore(client, target.redis_prefix, target.rules)
            assert await store.reset() == 1
            left = {
                name
                for name in names
                if await client.exists(Settings(campaign_id=name).redis_prefix + "meta")
            }
            assert left == set(names) - {f"{tag}{campaign}"}
        finally:
            for name in names:
                await client.delete(Settings(campaign_id=name).redis_prefix + "meta")
            await client.aclose()

    asyncio.run(main())
