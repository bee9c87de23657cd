"""Hand-made events and a feeder that plans and applies them, for the unit tests."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import redis

from processors.counting import (
    CampaignRules,
    Plan,
    Record,
    ShardedPlan,
    plan_batch,
    plan_shards,
)
from processors.events import Event, Rejection
from processors.state import COUNTERS, Applied, Stale
from streams.keys import Layout
from streams.store import MemoryStore, RedisStore, Store

T = TypeVar("T")
# The Redis URL the Feeds of a test use, None for the in-memory store
# (tests/processors/conftest.py runs the step's tests through both).
BACKEND: ContextVar[str | None] = ContextVar("BACKEND", default=None)
# The state shards the Feeds of a test keep in that Redis (PRESALE_STATE_SHARDS).
SHARDS: ContextVar[int] = ContextVar("SHARDS", default=1)

T0 = 1_700_000_000_000  # campaign start; a multiple of 1,000 ms
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
END = T0 + 10 * DAY_MS


def rules(**overrides: Any) -> CampaignRules:
    """A campaign [T0, T0 + 10 days) with small thresholds: 1,000 and 5,000 fen."""
    options: dict[str, Any] = {
        "campaign_id": "c1",
        "start_ms": T0,
        "end_ms": END,
        "thresholds_fen": (1_000, 5_000),
        "baselines_fen": {},
        "yoy_min_baseline_fen": 1_000,
    }
    options.update(overrides)
    return CampaignRules(**options)


def click(event_id: str, ts: int = T0, brand: str = "b1", **kw: Any) -> Event:
    return Event(event_id, "click", ts, kw.pop("user", "u1"), brand, **kw)


def cart(event_id: str, ts: int = T0, brand: str = "b1", **kw: Any) -> Event:
    return Event(event_id, "cart", ts, kw.pop("user", "u1"), brand, **kw)


def order(
    order_id: str,
    amount_fen: int,
    ts: int = T0,
    brand: str = "b1",
    event_id: str | None = None,
    **kw: Any,
) -> Event:
    return Event(
        event_id or f"e-{order_id}",
        "order",
        ts,
        kw.pop("user", "u1"),
        brand,
        order_id=order_id,
        amount_fen=amount_fen,
        **kw,
    )


def cancel(
    order_id: str,
    amount_fen: int,
    ts: int = T0,
    brand: str = "b1",
    event_id: str | None = None,
    **kw: Any,
) -> Event:
    return Event(
        event_id or f"x-{order_id}",
        "cancel",
        ts,
        kw.pop("user", "u1"),
        brand,
        order_id=order_id,
        amount_fen=amount_fen,
        **kw,
    )


@dataclass
class View:
    """What a store holds for one campaign, read the same way from either store:
    through the report the product prints, and the offsets."""

    offsets: dict[str, int]
    totals: dict[str, int]
    brands: dict[str, dict[str, int]]
    brand_channels: dict[tuple[str, str], dict[str, int]]
    channels: dict[str, dict[str, int]]
    buyers: dict[tuple[str, ...], int]  # () totals, (brand,), (brand, ch), ("", ch)
    milestones: dict[str, dict[str, Any]]
    dead_letters: dict[str, int]
    out_of_window: int
    late: int
    watermark_ms: int
    # The whole report: regions, first hour, minutes, vip_share.
    report: dict[str, Any]


def view_of(report: dict[str, Any], offsets: dict[str, int]) -> View:
    def counters(block: dict[str, Any]) -> dict[str, int]:
        return {k: v for k, v in block.items() if k in COUNTERS}

    buyers: dict[tuple[str, ...], int] = {(): report["totals"]["buyers"]}
    brands, brand_channels = {}, {}
    for row in report["brands"]:
        b = row["brand_id"]
        brands[b] = counters(row)
        buyers[(b,)] = row["buyers"]
        for ch, block in row["by_channel"].items():
            brand_channels[(b, ch)] = counters(block)
            buyers[(b, ch)] = block["buyers"]
    for ch, block in report["channels"].items():
        buyers[("", ch)] = block["buyers"]
    return View(
        offsets={tp: o for tp, o in offsets.items() if o >= 0},
        totals=counters(report["totals"]),
        brands=brands,
        brand_channels=brand_channels,
        channels={ch: counters(b) for ch, b in report["channels"].items()},
        buyers=buyers,
        milestones={
            f"{m['kind']}:{m['brand_id']}:{m['threshold_fen']}": m
            for m in report["milestones"]
        },
        dead_letters=report["dead_letters_by_reason"],
        out_of_window=report["out_of_window"],
        late=report["late"],
        watermark_ms=report["watermark_ms"],
        report=report,
    )


class Feed:
    """One campaign's state fed batch by batch, each batch at the next offsets,
    through the in-memory store or the production Lua step in a real Redis
    (`redis_url`), and read back through the store's report."""

    def __init__(
        self, campaign: CampaignRules | None = None, redis_url: str | None = None
    ) -> None:
        self.rules = campaign or rules()
        self.redis_url = redis_url if redis_url is not None else BACKEND.get()
        if self.redis_url is not None and SHARDS.get() > 1:
            self.rules = replace(self.rules, state_shards=SHARDS.get())
        self.prefix = f"t:{{{uuid.uuid4().hex}}}:"
        self.layout = Layout(self.prefix, self.rules.state_shards)
        self.memory = MemoryStore(self.rules)
        self.partitions: set[str] = set()

    def _run(self, job: Callable[[Store], Awaitable[T]]) -> T:
        async def go() -> T:
            if self.redis_url is None:
                return await job(self.memory)
            store = RedisStore.from_url(self.redis_url, self.prefix, self.rules)
            try:
                return await job(store)
            finally:
                await store.close()

        return asyncio.run(go())

    def offsets(self) -> dict[str, int]:
        return self._run(lambda s: s.applied_offsets(sorted(self.partitions)))

    def set_offsets(self, offsets: dict[str, int]) -> None:
        """Store offsets as if batches had been applied up to them."""
        self.partitions.update(offsets)
        if self.redis_url is None or not offsets:
            self.memory.state.offsets.update(offsets)
            return
        client = redis.Redis.from_url(self.redis_url)
        for key in self.layout.each("off"):
            client.hset(key, mapping=offsets)  # type: ignore[arg-type]
        client.close()

    def records(self, items: list[Event | Rejection], tp: str) -> list[Record]:
        self.partitions.add(tp)
        start = self.offsets().get(tp, -1) + 1
        return [(tp, start + i, item) for i, item in enumerate(items)]

    def plan(
        self, records: list[Record], applied: dict[str, int]
    ) -> Plan | ShardedPlan:
        """A plan on the given offsets (every shard's, when sharded)."""
        if self.rules.state_shards == 1:
            return plan_batch(records, self.rules, applied)
        return plan_shards(records, self.rules, [applied] * self.rules.state_shards)

    def apply(self, plan: Plan | ShardedPlan, now_ms: int = 0) -> Applied | Stale:
        self.partitions.update(plan.offsets)
        return self._run(lambda s: s.apply(plan, now_ms))

    def apply_records(self, records: list[Record], now_ms: int = 0) -> Applied | Stale:
        """Plan on the store's offsets, as the worker does, and apply."""
        self.partitions.update(tp for tp, _o, _i in records)

        async def job(store: Store) -> Applied | Stale:
            applied = await store.applied_offsets(sorted(self.partitions))
            return await store.apply(store.plan(records, applied), now_ms)

        return self._run(job)

    def send(
        self, *items: Event | Rejection, tp: str = "orders:0", now_ms: int = 0
    ) -> Applied:
        result = self.apply_records(self.records(list(items), tp), now_ms)
        assert isinstance(result, Applied)
        return result

    @property
    def state(self) -> View:
        report = self._run(lambda s: s.report())
        return view_of(report, self.offsets())

    def report(self, minutes: int = 60) -> dict[str, Any]:
        """The store's report, with the latest `minutes` minutes."""
        return self._run(lambda s: s.report(minutes=minutes))

    def brand(self, brand_id: str = "b1") -> dict[str, int]:
        return self.state.brands[brand_id]

    def snapshot(self) -> object:
        """Everything stored, to show a step changed nothing."""
        if self.redis_url is None:
            return copy.deepcopy(self.memory.state)
        client = redis.Redis.from_url(self.redis_url)
        keys = sorted(
            k
            for prefix in self.layout.scan_prefixes
            for k in client.scan_iter(match=prefix.replace("{", "\\{") + "*")
        )
        dump = {k: client.dump(k) for k in keys}
        client.close()
        return dump

    def click_generations(self) -> list[int]:
        """The click and cart dedupe generations the store keeps."""
        if self.redis_url is None:
            return sorted(self.memory.state.seen)
        client = redis.Redis.from_url(self.redis_url)
        every: set[int] = set()
        for prefix in self.layout.shard:
            gens = {int(g) for g in client.smembers(prefix + "dd:gens")}
            pattern = prefix.replace("{", "\\{").replace("}", "\\}") + "dd:*"
            stored = {
                k.decode().removeprefix(prefix) for k in client.scan_iter(pattern)
            }
            kept = {k.split(":")[1] for k in stored if not k.startswith("dd:o:")}
            kept -= {"gens"}
            assert kept == {str(g) for g in gens}, (kept, gens)  # no key left behind
            every |= gens
        client.close()
        return sorted(every)
