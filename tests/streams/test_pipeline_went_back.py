"""A store that went back is found without a next batch (issue 13, hole e).

Redis restarted from an AOF written every second can lose its last second.
A partition that gets no more records never runs a step that would be
answered stale, so the worker's lag timer asks `Pipeline.went_back` with the
stored offsets of its partitions.
"""

from __future__ import annotations

import asyncio
import copy

from faust.types import TP

from streams.metrics import Metrics
from streams.pipeline import Pipeline
from streams.store import MemoryStore
from tests.streams.test_pipeline_memory import (
    CLICKS,
    ORDERS,
    clicks,
    run,
    sample,
    settings,
)


def make() -> tuple[Pipeline, MemoryStore, Metrics]:
    store = MemoryStore(settings().rules)
    metrics = Metrics.create()
    return Pipeline(settings(), store, None, metrics), store, metrics


def stored(store: MemoryStore) -> dict[TP, int]:
    return {
        tp: store.state.offsets.get(
            f"{tp.topic.removeprefix('presale.')}:{tp.partition}", -1
        )
        for tp in (CLICKS, ORDERS)
    }


def test_nothing_went_back_nothing_to_read() -> None:
    pipeline, store, metrics = make()
    run(pipeline, {CLICKS: clicks(range(10))})
    assert asyncio.run(pipeline.went_back(stored(store))) is None
    assert sample(metrics, "presale_store_went_back_total", topic="clicks") == 0


def test_store_went_back_after_the_last_batch() -> None:
    """Offsets 0..4 applied, the state saved (the AOF's last fsync), 5..9
    applied, then the store goes back to the saved state: with no batch to
    follow, `went_back` asks for clicks:0 again from 5, lowers what the
    pipeline holds as applied, and the re-read counts every click once.
    (Fails before: there was no such check; the pipeline learned it only from
    the next batch's stale answer.)"""
    pipeline, store, metrics = make()
    run(pipeline, {CLICKS: clicks(range(5))})
    saved = copy.deepcopy(store.state)
    run(pipeline, {CLICKS: clicks(range(5, 10))})
    store.state = saved  # Redis restarted without its last second
    assert asyncio.run(pipeline.went_back(stored(store))) == {CLICKS: 5}
    assert pipeline.applied["clicks:0"] == pipeline.confirmed["clicks:0"] == 4
    assert sample(metrics, "presale_store_went_back_total", topic="clicks") == 1
    assert run(pipeline, {CLICKS: clicks(range(5, 10))}) is None
    assert store.state.offsets["clicks:0"] == 9
    assert store.state.totals["clicks"] == 10
