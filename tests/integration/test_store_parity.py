"""The Redis Lua store and the in-memory reference store agree, plan for plan.

Both are fed the same plans (`processors.counting.plan_batch` over a seeded,
noisy stream): every step must give the same Applied/Stale result, and the
reports the same counters (buyers: HyperLogLog vs exact, within 2% or 1), the
same milestones (crossed_at_ms and detected_at_ms included) and the same offsets.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import msgspec
import pytest

from processors.counting import (
    CampaignRules,
    Plan,
    Record,
    oldest_generation,
    plan_batch,
)
from processors.events import CHANNELS, REASONS, Event, Rejection
from processors.state import Applied, Stale
from streams.store import MemoryStore, RedisStore
from tests.integration.helpers import buyers_close, campaign_keys, report_diff
from tests.support.services import REDIS

pytestmark = pytest.mark.integration

T0_MS = 1_760_529_600_000
HOUR_MS = 3_600_000
END_MS = T0_MS + 2 * HOUR_MS
BRANDS = ("apple", "b101", "b202", "b303", "b404", "b505")
BRAND_WEIGHTS = (6, 3, 2, 2, 1, 1)
# Small thresholds and baselines so milestones fire for some brands, not all:
# apple and b101 double, b202's baseline is under the floor, b303's is 0, the
# last two have none.
THRESHOLDS_FEN = (60_000, 400_000)
BASELINES_FEN = {"apple": 30_000, "b101": 60_000, "b202": 200, "b303": 0}
YOY_FLOOR_FEN = 1_000
PARTITIONS = 3
NOW_MS = 1_900_000_000_000


def rules(campaign_id: str, **changes: Any) -> CampaignRules:
    settings: dict[str, Any] = {
        "campaign_id": campaign_id,
        "start_ms": T0_MS,
        "end_ms": END_MS,
        "thresholds_fen": THRESHOLDS_FEN,
        "baselines_fen": BASELINES_FEN,
        "yoy_min_baseline_fen": YOY_FLOOR_FEN,
        "dedupe_shards": 64,
    }
    settings.update(changes)
    return CampaignRules(**settings)


def noisy_stream(seed: int, n_events: int) -> list[Record]:
    """Seeded events in arrival order, each on a "topic:partition" with its offset.

    Noise: 4% duplicates (half soon, half 10-40 min later), 2% re-sent orders
    (new event_id), 10% of orders cancelled (a third of the cancels before their
    order, a fifth sent twice), ~8% out of the campaign window, 2% rejections,
    4% late arrivals.
    """
    rng = random.Random(seed)
    arrivals: list[tuple[int, int, Event | Rejection]] = []
    seq = iter(range(10**9))

    def arrive(at_ms: int, item: Event | Rejection) -> None:
        arrivals.append((at_ms, next(seq), item))

    def channel_fields() -> dict[str, Any]:
        channel = rng.choice(CHANNELS)
        room = f"room{rng.randrange(5)}" if channel == "livestream" else None
        return {"channel": channel, "room_id": room}

    orders: list[tuple[int, Event]] = []
    for i in range(n_events):
        ts_ms = rng.randrange(T0_MS - 600_000, END_MS + 600_000)
        at_ms = ts_ms + (
            rng.randrange(5_000, 240_000) if rng.random() < 0.04 else rng.randrange(800)
        )
        kind = rng.choices(("click", "cart", "order"), (55, 20, 25))[0]
        common: dict[str, Any] = {
            "event_id": f"e{seed}-{i}",
            "type": kind,
            "ts_ms": ts_ms,
            "user_id": f"u{rng.randrange(500)}",
            "brand_id": rng.choices(BRANDS, BRAND_WEIGHTS)[0],
            **channel_fields(),
        }
        if kind == "cart":
            common["qty"] = rng.randint(1, 3)
        if kind == "order":
            common.update(
                order_id=f"o{seed}-{i}",
                amount_fen=rng.randint(50, 9_000),
                qty=rng.randint(1, 3),
                vip=rng.random() < 0.25,
            )
        event = Event(**common)
        if kind == "order":
            orders.append((at_ms, event))
        arrive(at_ms, event)
        roll = rng.random()
        if roll < 0.02:
            arrive(at_ms + rng.randrange(100, 90_000), event)
        elif roll < 0.04:
            arrive(at_ms + rng.randrange(600_000, 2_400_000), event)
        if kind == "order" and rng.random() < 0.02:
            resent = msgspec.structs.replace(event, event_id=f"r{seed}-{i}")
            arrive(at_ms + rng.randrange(1_000, 180_000), resent)
        if rng.random() < 0.02:
            reason = rng.choice(REASONS)
            arrive(at_ms + 1, Rejection(reason, f"{reason} for the test"))

    for j, (order_at_ms, order) in enumerate(orders):
        if rng.random() >= 0.10:
            continue
        amount = order.amount_fen if rng.random() < 0.8 else order.amount_fen // 3
        # A cancel before its order: the order was held up, so the cancel comes
        # seconds after the order's time but arrives before the order does.
        before_order = rng.random() < 0.33
        delay_ms = (
            rng.randrange(1_000, 30_000)
            if before_order
            else rng.randrange(30_000, 1_800_000)
        )
        cancel = Event(
            event_id=f"x{seed}-{j}",
            type="cancel",
            ts_ms=order.ts_ms + delay_ms,
            user_id=order.user_id,
            brand_id=order.brand_id,
            channel=order.channel,
            room_id=order.room_id,
            order_id=order.order_id,
            amount_fen=amount,
        )
        at_ms = (
            order_at_ms - rng.randrange(100, 5_000)
            if before_order
            else cancel.ts_ms + rng.randrange(800)
        )
        arrive(at_ms, cancel)
        if rng.random() < 0.2:
            again = (
                cancel
                if rng.random() < 0.5
                else msgspec.structs.replace(cancel, event_id=f"y{seed}-{j}")
            )
            arrive(at_ms + rng.randrange(1_000, 120_000), again)

    arrivals.sort(key=lambda a: (a[0], a[1]))
    topic_of = {
        "click": "clicks",
        "cart": "carts",
        "order": "orders",
        "cancel": "orders",
    }
    next_offset: Counter[str] = Counter()
    records: list[Record] = []
    for _at, _seq, item in arrivals:
        topic = (
            topic_of[item.type]
            if isinstance(item, Event)
            else rng.choice(("clicks", "carts", "orders"))
        )
        tp = f"{topic}:{rng.randrange(PARTITIONS)}"
        records.append((tp, next_offset[tp], item))
        next_offset[tp] += 1
    return records


def all_partitions() -> list[str]:
    return [
        f"{t}:{p}" for t in ("clicks", "carts", "orders") for p in range(PARTITIONS)
    ]


def milestone_keys(result: Applied) -> list[tuple[str, str, int, int, int]]:
    return sorted(
        (m.kind, m.brand_id, m.threshold_fen, m.crossed_at_ms, m.detected_at_ms)
        for m in result.milestones
    )


@dataclass
class Pair:
    """The two stores under test, fed the same plans."""

    redis: RedisStore
    memory: MemoryStore
    steps: int = 0
    applied: int = 0
    stale: int = 0
    new_events: int = 0
    duplicates: int = 0
    milestones: int = 0

    async def offsets(self) -> dict[str, int]:
        from_redis = await self.redis.applied_offsets(all_partitions())
        from_memory = await self.memory.applied_offsets(all_partitions())
        assert from_redis == from_memory
        return from_memory

    async def apply(self, plan: Plan) -> Applied | Stale:
        self.steps += 1
        now_ms = NOW_MS + self.steps
        got_redis = await self.redis.apply(plan, now_ms)
        got_memory = await self.memory.apply(plan, now_ms)
        where = f"step {self.steps}"
        assert type(got_redis) is type(got_memory), where
        if isinstance(got_memory, Stale):
            assert got_redis == got_memory, where
            self.stale += 1
            return got_memory
        assert isinstance(got_redis, Applied)
        assert got_redis.new_events == got_memory.new_events, where
        assert got_redis.duplicates == got_memory.duplicates, where
        assert milestone_keys(got_redis) == milestone_keys(got_memory), where
        self.applied += 1
        self.new_events += got_memory.new_events
        self.duplicates += got_memory.duplicates
        self.milestones += len(got_memory.milestones)
        return got_memory

    async def assert_same_reports(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(Redis report, memory report), after checking they are the same."""
        from_redis = await self.redis.report()
        from_memory = await self.memory.report()
        assert report_diff(from_redis, from_memory) == []
        for top in (0, 3):
            assert (
                report_diff(
                    await self.redis.report(top=top), await self.memory.report(top=top)
                )
                == []
            )
        return from_redis, from_memory


async def open_pair(campaign_rules: CampaignRules) -> Pair:
    prefix = f"presale:{{parity-{uuid.uuid4().hex[:10]}}}:"
    store = RedisStore.from_url(REDIS, prefix, campaign_rules)
    await store.ping()
    return Pair(store, MemoryStore(campaign_rules))


async def close_pair(pair: Pair) -> None:
    try:
        await pair.redis.reset()
    finally:
        await pair.redis.close()


async def feed(
    pair: Pair,
    records: list[Record],
    campaign_rules: CampaignRules,
    seed: int,
    after_step: Any = None,
) -> None:
    """Feed `records` in random, sometimes overlapping batches; now and then a plan
    built on offsets that are two steps old (stale if its partitions moved)."""
    rng = random.Random(seed)
    history: list[dict[str, int]] = []
    chunks: list[list[Record]] = []
    position = 0
    while position < len(records):
        size = rng.randint(1, 120)
        chunk = records[position : position + size]
        current = await pair.offsets()
        if len(history) >= 2 and rng.random() < 0.1:
            # The batch of two steps ago, planned again on the offsets of then:
            # a worker that did not see the steps since.
            old_plan = plan_batch(chunks[-2], campaign_rules, history[-2])
            if not old_plan.empty:
                result = await pair.apply(old_plan)
                moved = any(
                    current.get(tp, -1) != before
                    for tp, (before, _last) in old_plan.offsets.items()
                )
                assert isinstance(result, Stale) == moved
                current = await pair.offsets()
        plan = plan_batch(chunk, campaign_rules, current)
        if not plan.empty:
            result = await pair.apply(plan)
            assert isinstance(result, Applied)
            if after_step is not None:
                await after_step()
        history.append(current)
        chunks.append(chunk)
        # A redelivery: the next fetch starts inside this batch again.
        back = rng.randint(1, len(chunk)) if rng.random() < 0.25 else 0
        position += len(chunk) - back if back < len(chunk) else 1
    # The whole stream delivered again: every record is at or below its offset.
    assert plan_batch(records, campaign_rules, await pair.offsets()).empty


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("seed", [7, 2025])
def test_redis_store_matches_memory_store(seed: int) -> None:
    """Seeded noisy streams of 3,000 events (3,304 and 3,296 records with the
    noise, over 9 partitions, fed in overlapping batches of 1-120 records, with
    plans built on old offsets mixed in): every step's Applied/Stale result
    (new facts, duplicates, milestones; the stale partition and its offset),
    every offset, and the final reports (all brands, top 3 and top 0) are the same
    in Redis and in memory, milestones included with crossed_at_ms and
    detected_at_ms. Measured at seed 7: 67 plans applied, 8 refused as stale,
    2,646 new facts, 137 duplicates, 9 milestones (7 thresholds, 2 doubled)."""

    async def body() -> None:
        campaign_rules = rules(f"parity-{seed}")
        records = noisy_stream(seed, 3_000)
        pair = await open_pair(campaign_rules)
        try:
            await feed(pair, records, campaign_rules, seed)
            _live, report = await pair.assert_same_reports()
        finally:
            await close_pair(pair)
        print(
            f"seed {seed}: {len(records)} records, {pair.applied} applied, "
            f"{pair.stale} stale, {pair.new_events} new, {pair.duplicates} dup, "
            f"{pair.milestones} milestones"
        )
        # The stream exercised what it is meant to.
        assert pair.stale >= 1
        assert pair.duplicates >= 50
        assert report["totals"]["cancels"] >= 20
        assert report["out_of_window"] >= 100
        assert report["dead_letters"] >= 20
        kinds = Counter(m["kind"] for m in report["milestones"])
        assert kinds["gmv_threshold"] >= 3
        assert kinds["yoy_double"] == 2  # apple and b101 only

    run(body())


def test_parity_while_dedupe_generations_roll_over() -> None:
    """With a 5-minute dedupe horizon over a 2h40 stream (and duplicates up to 40
    minutes late, which are then late, the same in both stores), the two stores
    still agree step for step, and Redis deletes old generations: after every
    step only generations of event times within a horizon of the watermark have
    keys, while many more were used in all; the key count goes down as the
    watermark moves, last when the bulk of the stream jumps an hour ahead, and
    no other dedupe key is left."""
    horizon_ms = 300_000
    shards = 8
    # The window runs one hour past the stream, so the watermark can jump.
    campaign_rules = rules(
        "parity-gens",
        end_ms=END_MS + HOUR_MS,
        dedupe_horizon_ms=horizon_ms,
        dedupe_shards=shards,
    )
    records = noisy_stream(11, 3_000)

    async def body() -> None:
        pair = await open_pair(campaign_rules)
        seen: list[set[bytes]] = []

        every_gen: set[int] = set()

        async def dedupe_keys() -> None:
            """The dedupe keys that exist now, of every generation used so far
            (EXISTS on each: a SCAN of a shared Redis would be slow)."""
            prefix = pair.redis.prefix
            wm = (await pair.memory.report())["watermark_ms"]
            assert (await pair.redis.report())["watermark_ms"] == wm
            oldest = oldest_generation(wm, horizon_ms)
            gens = {
                int(g) for g in await pair.redis.client.smembers(prefix + "dd:gens")
            }
            assert all(g >= oldest for g in gens), (sorted(gens), oldest)
            every_gen.update(gens)
            names = [
                f"{prefix}dd:{g}:{i}" for g in sorted(every_gen) for i in range(shards)
            ]
            async with pair.redis.client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.exists(name)
                found = await pipe.execute()
            keys = {n.encode() for n, there in zip(names, found, strict=True) if there}
            key_gens = {int(k.split(b":")[-2]) for k in keys}
            assert key_gens == gens, (sorted(key_gens), sorted(gens))
            seen.append(keys | ({(prefix + "dd:gens").encode()} if gens else set()))

        try:
            await feed(pair, records, campaign_rules, 11, dedupe_keys)
            # The bulk of the stream jumps an hour (12 horizons) ahead: 4 batches
            # of 16 or more events fill the watermark's 64 samples, and every
            # older generation goes.
            before = len(seen[-1])
            for b in range(4):
                ahead: list[Record] = [
                    (
                        "clicks:0",
                        10_000 + b * 20 + i,
                        Event(f"jump{b}-{i}", "click", END_MS + HOUR_MS - 1, "u1", "x"),
                    )
                    for i in range(20)
                ]
                offsets = await pair.offsets()
                await pair.apply(
                    plan_batch(ahead, campaign_rules, offsets, {"clicks:0"})
                )
                await dedupe_keys()
            await pair.assert_same_reports()
            # No dedupe key of any other generation was left behind.
            left = campaign_keys(pair.redis.prefix, "dd:*")
            orders = {k for k in left if b":dd:o:" in k}  # the campaign's life
            assert len(orders) == shards
            assert set(left) - orders == seen[-1]
        finally:
            await close_pair(pair)
        counts = [len(keys) for keys in seen]
        drops = sum(1 for a, b in itertools.pairwise(counts) if b < a)
        used = set().union(*seen)
        generations = {k.split(b":")[-2] for k in used if not k.endswith(b"gens")}
        print(
            f"dd keys: max {max(counts)} at once, {len(used)} used in all over "
            f"{len(generations)} generations; {drops} drops, last {before} -> "
            f"{counts[-1]}"
        )
        # Kept: generations from a horizon behind the watermark to the newest
        # event, which runs a few horizons ahead of the median of the latest
        # samples in this stream (33 keys at most, measured).
        assert max(counts) <= shards * 5 + 1
        assert len(generations) >= 20
        assert counts[-1] < before
        assert drops >= 1
        # The duplicates that arrive more than a horizon late are late, the
        # others duplicates: the same ones in both stores (checked step by step).
        assert pair.duplicates >= 20

    run(body())


@pytest.mark.parametrize("shards", [16_384, 1])
def test_parity_on_one_batch_of_8500_orders_of_one_brand(shards: int) -> None:
    """One plan of 8,500 first-hour orders from 8,500 distinct users for one brand
    and one channel (over Lua's 8,000-value unpack limit for PFADD, and with one
    dedupe shard for SMISMEMBER and SADD) applies in Redis exactly as in memory:
    8,500 orders, buyers within 2% of 8,500 (measured: HyperLogLog said 8,587),
    both thresholds and the YoY double crossed at the same order; the same
    orders again at new offsets are all duplicates."""
    campaign_rules = replace(
        rules(f"parity-big-{shards}", thresholds_fen=(100_000, 4_000_000)),
        dedupe_shards=shards,
    )
    n = 8_500
    orders = [
        Event(
            event_id=f"big{i}",
            type="order",
            ts_ms=T0_MS + i * 100,
            user_id=f"buyer{i}",
            brand_id="apple",
            channel="flash_sale",
            order_id=f"bo{i}",
            amount_fen=500 + i % 7,
            vip=i % 3 == 0,
        )
        for i in range(n)
    ]
    first: list[Record] = [("orders:0", i, e) for i, e in enumerate(orders)]
    again: list[Record] = [("orders:1", i, e) for i, e in enumerate(orders)]

    async def body() -> None:
        pair = await open_pair(campaign_rules)
        try:
            plan = plan_batch(first, campaign_rules, await pair.offsets())
            result = await pair.apply(plan)
            assert isinstance(result, Applied)
            assert result.new_events == n
            assert {(m.kind, m.threshold_fen) for m in result.milestones} == {
                ("gmv_threshold", 100_000),
                ("gmv_threshold", 4_000_000),
                ("yoy_double", 60_000),
            }
            second = await pair.apply(
                plan_batch(again, campaign_rules, await pair.offsets())
            )
            assert isinstance(second, Applied)
            assert (second.new_events, second.duplicates) == (0, n)
            live, report = await pair.assert_same_reports()
        finally:
            await close_pair(pair)
        apple = report["brands"][0]
        assert (apple["brand_id"], apple["orders"], apple["buyers"]) == ("apple", n, n)
        assert apple["gross_gmv_fen"] == sum(e.amount_fen for e in orders)
        print(f"HyperLogLog buyers of 8,500 distinct: {live['brands'][0]['buyers']}")
        assert buyers_close(live["brands"][0]["buyers"], n)
        assert buyers_close(live["totals"]["buyers"], n)

    run(body())
