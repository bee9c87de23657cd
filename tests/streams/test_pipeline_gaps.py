"""A batch that begins past the next offset to apply is never applied as it is.

Applying it would move the stored offset past records that were fetched and
never applied, and they would be lost for good. The pipeline asks for the
partition to be read again from the next offset to apply instead, and accepts
the batch only when a re-read begins at the same place (Kafka has nothing in
between).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable

from redis.exceptions import ConnectionError as RedisConnectionError

from processors.counting import Plan
from processors.state import Applied, Stale
from streams.metrics import Metrics
from streams.pipeline import Pipeline
from streams.store import MemoryStore
from tests.streams.test_pipeline_memory import (
    CARTS,
    CLICKS,
    ORDERS,
    clicks,
    rec,
    run,
    sample,
    settings,
    value_of,
)


class FlakyStore(MemoryStore):
    """A MemoryStore whose next calls can be made to fail, as when Redis is away."""

    def __init__(self) -> None:
        super().__init__(settings().rules)
        self.offsets_fail: list[bool] = []  # one per applied_offsets call, in order
        self.send_fails = 0

    async def applied_offsets(self, partitions: Iterable[str]) -> dict[str, int]:
        if self.offsets_fail and self.offsets_fail.pop(0):
            raise RedisConnectionError("Redis went away")
        return await super().applied_offsets(partitions)

    async def send(self, plan: Plan, now_ms: int) -> Awaitable[Applied | Stale]:
        if self.send_fails:
            self.send_fails -= 1
            raise RedisConnectionError("Redis went away")
        return await super().send(plan, now_ms)


def make() -> tuple[Pipeline, FlakyStore, Metrics]:
    store = FlakyStore()
    metrics = Metrics.create()
    return Pipeline(settings(), store, None, metrics), store, metrics


def test_batch_past_the_next_offset_is_read_again() -> None:
    """Offsets 0..4 applied, then a batch of 7..9 (5 and 6 were fetched and
    lost on the way): nothing is applied, the partition is re-read from 5, and
    the re-read 5..9 counts every click once."""
    pipeline, store, metrics = make()
    run(pipeline, {CLICKS: clicks(range(5))})
    assert run(pipeline, {CLICKS: clicks(range(7, 10))}) == {CLICKS: 5}
    assert store.state.offsets == {"clicks:0": 4}
    assert store.state.totals["clicks"] == 5
    assert run(pipeline, {CLICKS: clicks(range(5, 10))}) is None
    assert store.state.offsets == {"clicks:0": 9}
    assert store.state.totals["clicks"] == 10
    assert sample(metrics, "presale_offset_gaps_total", topic="clicks") == 1


def test_gap_seen_again_after_a_reread_is_kafkas() -> None:
    """When the re-read begins at 7 again, Kafka holds nothing at 5 and 6
    (transaction markers, compaction): the batch is applied, once."""
    pipeline, store, metrics = make()
    run(pipeline, {CLICKS: clicks(range(5))})
    assert run(pipeline, {CLICKS: clicks(range(7, 10))}) == {CLICKS: 5}
    assert run(pipeline, {CLICKS: clicks(range(7, 10))}) is None
    assert store.state.offsets == {"clicks:0": 9}
    assert store.state.totals["clicks"] == 8
    assert sample(metrics, "presale_offset_gaps_total", topic="clicks") == 1
    # A later gap at another place is questioned again.
    assert run(pipeline, {CLICKS: clicks(range(12, 13))}) == {CLICKS: 10}
    assert store.state.totals["clicks"] == 8


def test_only_the_partition_with_the_gap_waits() -> None:
    """A batch over two partitions, one of them past its next offset: the other
    is applied at once; only the first is read again."""
    pipeline, store, _metrics = make()
    run(pipeline, {CLICKS: clicks(range(3))})
    batch = {
        CLICKS: clicks(range(5, 6)),
        ORDERS: [rec(ORDERS, 0, value_of("order", 0))],
    }
    assert run(pipeline, batch) == {CLICKS: 3}
    assert store.state.offsets == {"clicks:0": 2, "orders:1": 0}
    assert store.state.totals["orders"] == 1


def test_reread_asked_for_and_lost_to_a_failure_is_asked_again() -> None:
    """The store lost the writes of 2..4 while 5..6 were in flight. Settling
    that step finds the offsets went back and asks for a re-read from 2, but
    reading the other offsets fails (Redis away again) and the batch 7..8 is
    tried again: that try must not apply 7..8 on offset 1 (which would lose
    2..6) but ask for the re-read from 2 once more."""
    pipeline, store, _metrics = make()

    async def go() -> dict[object, int] | None:
        await pipeline.on_batch({CLICKS: clicks(range(5))})
        await pipeline.flush()
        store.state.offsets["clicks:0"] = 1  # as if the writes of 2..4 were lost
        await pipeline.on_batch({CLICKS: clicks(range(5, 7))})  # refused: stale
        store.offsets_fail = [False, True]  # the settling read works, the next fails
        return await pipeline.on_batch({CLICKS: clicks(range(7, 9))})

    assert asyncio.run(go()) == {CLICKS: 2}
    assert store.state.offsets == {"clicks:0": 1}
    assert run(pipeline, {CLICKS: clicks(range(2, 9))}) is None
    assert store.state.offsets == {"clicks:0": 8}
    assert store.state.totals["clicks"] == 9


def test_a_batch_tried_again_is_not_a_reread() -> None:
    """A batch past the next offset of one partition, whose other partition's
    step fails and is tried again: the second try sees the same first offset,
    but it read nothing again, so it still asks for the re-read."""
    pipeline, store, _metrics = make()

    async def go() -> dict[object, int] | None:
        await pipeline.on_batch({CLICKS: clicks(range(5))})
        await pipeline.flush()
        store.send_fails = 1  # the orders step never reaches the store
        await pipeline.on_batch({ORDERS: [rec(ORDERS, 0, value_of("order", 0))]})
        store.offsets_fail = [True]  # settling it fails once: the batch is retried
        return await pipeline.on_batch(
            {CLICKS: clicks(range(7, 9)), CARTS: [rec(CARTS, 0, value_of("cart", 0))]}
        )

    assert asyncio.run(go()) == {CLICKS: 5}
    asyncio.run(pipeline.flush())
    assert store.state.offsets == {"clicks:0": 4, "orders:1": 0, "carts:2": 0}
    assert store.state.totals["clicks"] == 5
