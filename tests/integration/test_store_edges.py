"""Edge cases of the Lua apply step that once broke it, held to the in-memory store."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from processors.counting import CampaignRules, Record, plan_batch
from processors.events import MAX_AMOUNT_FEN, Event
from processors.state import Applied
from streams.store import MemoryStore, RedisStore
from tests.support.services import REDIS

pytestmark = pytest.mark.integration

T0 = 1_760_529_600_000


def order(i: int, brand: str, amount_fen: int, ts_ms: int = T0 + 1_000) -> Event:
    return Event(
        event_id=f"e{i}",
        type="order",
        ts_ms=ts_ms,
        user_id=f"u{i}",
        brand_id=brand,
        order_id=f"o{i}",
        amount_fen=amount_fen,
    )


async def both(rules: CampaignRules, batches: list[list[Event]]) -> tuple[dict, dict]:
    redis_store = RedisStore.from_url(REDIS, f"presale:{{{rules.campaign_id}}}:", rules)
    memory = MemoryStore(rules)
    try:
        for store in (redis_store, memory):
            offset = -1
            for events in batches:
                records: list[Record] = []
                for e in events:
                    offset += 1
                    records.append(("orders:0", offset, e))
                applied = await store.applied_offsets(["orders:0"])
                result = await store.apply(plan_batch(records, rules, applied), 1)
                assert isinstance(result, Applied)
        return await redis_store.report(), await memory.report()
    finally:
        await redis_store.reset()
        await redis_store.close()


def test_free_first_hour_order_beside_a_milestone() -> None:
    """A brand's only first-hour order is free (0 fen), in the same batch as
    another brand crossing a threshold: the step succeeds, the milestone fires,
    and Redis agrees with the in-memory store."""
    rules = CampaignRules(
        f"edge-{uuid.uuid4().hex[:8]}", T0, T0 + 7_200_000, thresholds_fen=(60_000,)
    )
    live, want = asyncio.run(
        both(rules, [[order(1, "alpha", 100_000), order(2, "gamma", 0)]])
    )
    assert [m["brand_id"] for m in live["milestones"]] == ["alpha"]
    assert live["totals"] == want["totals"]
    assert live["brands"] == want["brands"]


def test_huge_sums_stay_exact() -> None:
    """9,100 orders of 10^12 - 1 fen in one batch sum to 9,099,999,999,990,900 fen,
    beyond a double's exact 2^53: the Redis counters are exact to the fen."""
    rules = CampaignRules(f"edge-{uuid.uuid4().hex[:8]}", T0, T0 + 7_200_000)
    amount = MAX_AMOUNT_FEN - 1
    events = [order(i, "whale", amount) for i in range(9_100)]
    live, want = asyncio.run(both(rules, [events]))
    assert live["totals"]["gross_gmv_fen"] == 9_100 * amount
    assert live["totals"]["net_gmv_fen"] == 9_100 * amount
    assert live["brands"][0]["first_hour_gross_gmv_fen"] == 9_100 * amount
    assert live["totals"]["gross_gmv_fen"] == want["totals"]["gross_gmv_fen"]


def test_a_minute_of_thousands_of_brands() -> None:
    """6,000 brands' orders in one event-time minute: the minute's traffic hash
    gets 6,001 fields in one step (more than Lua can pass to one command), every
    brand's cell is right, and the counters agree with the in-memory store."""
    rules = CampaignRules(f"edge-{uuid.uuid4().hex[:8]}", T0, T0 + 7_200_000)
    events = [order(i, f"brand-{i}", 100) for i in range(6_000)]
    asyncio.run(_many_brands(rules, events))


async def _many_brands(rules: CampaignRules, events: list[Event]) -> None:
    store = RedisStore.from_url(REDIS, f"presale:{{{rules.campaign_id}}}:", rules)
    memory = MemoryStore(rules)
    try:
        records: list[Record] = [("orders:0", i, e) for i, e in enumerate(events)]
        for each in (store, memory):
            result = await each.apply(plan_batch(records, rules, {}), 1)
            assert isinstance(result, Applied)
        minute = (T0 + 1_000) // 60_000 * 60_000
        cells = await store.client.hgetall(f"{store.prefix}sm:{minute}")
        want = {f"brand|{e.brand_id}".encode(): b"1" for e in events}
        want[b"channel|other"] = b"6000"
        assert cells == want
        live, expected = await store.report(), await memory.report()
        # Buyers are a HyperLogLog estimate in Redis (0.81% standard error).
        assert (
            abs(live["totals"].pop("buyers") - expected["totals"].pop("buyers")) < 180
        )
        assert live["totals"] == expected["totals"]
        assert live["brands"] == expected["brands"]
    finally:
        await store.reset()
        await store.close()


def test_intset_limit_is_redis_own_and_a_full_shard_stays_an_intset() -> None:
    """The limit the worker's advice reads is the server's; a dedupe shard of that
    many ids is a compact intset (its members are 64-bit integers), one more is not."""
    asyncio.run(_fill_one_shard())


async def _fill_one_shard() -> None:
    campaign = f"intset-{uuid.uuid4().hex[:8]}"
    rules = CampaignRules(campaign, T0, T0 + 3_600_000, dedupe_shards=1)
    store = RedisStore.from_url(REDIS, f"presale:{{{campaign}}}:", rules)
    try:
        limit = await store.intset_limit()
        raw = await store.client.config_get("set-max-intset-entries")
        assert limit is not None
        assert limit == int(raw["set-max-intset-entries"])
        records: list[Record] = [
            ("clicks:0", i, Event(f"c{i}", "click", T0 + i, "u", "b"))
            for i in range(limit + 1)
        ]
        key = f"{store.prefix}dd:{T0 // rules.dedupe_horizon_ms}:0"
        for upto, applied, encoding in (
            (limit, {}, b"intset"),
            (limit + 1, {"clicks:0": limit - 1}, b"hashtable"),
        ):
            plan = plan_batch(records[:upto], rules, applied)
            assert isinstance(await store.apply(plan, T0), Applied)
            assert await store.client.scard(key) == upto
            assert await store.client.object("encoding", key) == encoding
    finally:
        await store.reset()
        await store.close()
