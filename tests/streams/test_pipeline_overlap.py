"""The pipeline plans a batch while the previous batch's step is in flight."""

from __future__ import annotations

import asyncio

from processors.counting import plan_batch
from processors.events import Event
from processors.state import apply_plan
from tests.streams.test_pipeline_memory import CLICKS, T0, clicks, make_pipeline


def test_batches_back_to_back_each_counted_once() -> None:
    """Three batches handed over without a flush between them: each on_batch
    settles the step before it; after the last flush every click is counted
    once and the offsets are the last batch's."""
    pipeline, store, _metrics = make_pipeline()

    async def go() -> None:
        assert await pipeline.on_batch({CLICKS: clicks(range(0, 4))}) is None
        assert pipeline.inflight is not None
        assert await pipeline.on_batch({CLICKS: clicks(range(4, 8))}) is None
        assert await pipeline.on_batch({CLICKS: clicks(range(2, 10))}) is None
        assert await pipeline.flush() is None
        assert pipeline.inflight is None

    asyncio.run(go())
    assert store.state.totals["clicks"] == 10
    assert store.state.offsets == {"clicks:0": 9}
    assert pipeline.confirmed == {"clicks:0": 9}


def test_step_in_flight_refused_is_redone_and_next_batch_replanned() -> None:
    """Another worker applies records 4..5 while this worker's step for 4..7 is
    in flight (so the store refuses it as stale): settling redoes 6..7 on the
    store's offsets, and the next batch, planned on the optimistic offsets, is
    planned again. Every click counted once: 12."""
    pipeline, store, _metrics = make_pipeline()
    rules = pipeline.rules

    async def go() -> None:
        await pipeline.on_batch({CLICKS: clicks(range(0, 4))})
        await pipeline.flush()
        theirs = [
            ("clicks:0", i, Event(f"click-{i}", "click", T0 + i, "u", "b1"))
            for i in range(4, 6)
        ]
        apply_plan(store.state, plan_batch(theirs, rules, {"clicks:0": 3}), rules, 0)
        await pipeline.on_batch({CLICKS: clicks(range(4, 8))})
        await pipeline.on_batch({CLICKS: clicks(range(8, 12))})
        assert await pipeline.flush() is None

    asyncio.run(go())
    assert store.state.offsets == {"clicks:0": 11}
    assert store.state.totals["clicks"] == 12
