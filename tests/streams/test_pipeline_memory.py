"""streams.pipeline.Pipeline.on_batch over a MemoryStore, with fake Kafka batches."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Mapping
from typing import Any

from aiokafka.structs import ConsumerRecord
from faust.types import TP

from processors.counting import plan_batch
from processors.events import Event
from processors.state import apply_plan
from streams.metrics import Metrics
from streams.pipeline import Pipeline
from streams.settings import Settings
from streams.store import MemoryStore

T0 = 1_700_000_000_000
HOUR_MS = 3_600_000
END = T0 + 86_400_000
CLICKS = TP("presale.clicks", 0)
ORDERS = TP("presale.orders", 1)
CARTS = TP("presale.carts", 2)

Batch = Mapping[TP, list[ConsumerRecord[bytes, bytes]]]


def settings() -> Settings:
    return Settings(
        campaign_id="t1", start_ms=T0, end_ms=END, milestones_fen=(1_000, 5_000)
    )


def make_pipeline() -> tuple[Pipeline, MemoryStore, Metrics]:
    s = settings()
    store = MemoryStore(s.rules)
    metrics = Metrics.create()  # its own CollectorRegistry
    return Pipeline(s, store, None, metrics), store, metrics


def value_of(kind: str, n: int, **fields: Any) -> bytes:
    event: dict[str, Any] = {
        "event_id": f"{kind}-{n}",
        "type": kind,
        "ts": T0 + n,
        "user_id": f"u{n}",
        "brand_id": "b1",
    }
    if kind in ("order", "cancel"):
        event.update(order_id=f"o{n}", amount_fen=100)
    event.update(fields)
    return json.dumps(event).encode()


def rec(tp: TP, offset: int, value: bytes | None) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        timestamp=T0,
        timestamp_type=0,
        key=None,
        value=value,
        checksum=None,
        serialized_key_size=-1,
        serialized_value_size=-1 if value is None else len(value),
        headers=[],
    )


def clicks(offsets: range) -> list[ConsumerRecord[bytes, bytes]]:
    """Clicks at these offsets, each with its own event_id (click-<offset>)."""
    return [rec(CLICKS, i, value_of("click", i)) for i in offsets]


def run(pipeline: Pipeline, batch: Batch) -> dict[TP, int] | None:
    """on_batch, then flush: the batch's step is settled, as when the worker
    goes idle; a re-read asked by either is returned."""

    async def go() -> dict[TP, int] | None:
        reseek = await pipeline.on_batch(batch)
        settled = await pipeline.flush()
        return reseek or settled

    return asyncio.run(go())


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_batch_applies_and_moves_offsets() -> None:
    """A fresh batch is counted, and the pipeline and the store both hold its
    last offset per partition."""
    pipeline, store, _metrics = make_pipeline()
    assert run(pipeline, {CLICKS: clicks(range(5))}) is None
    assert store.state.totals["clicks"] == 5
    assert store.state.offsets == {"clicks:0": 4}
    assert pipeline.applied == {"clicks:0": 4}


def test_redelivered_batch_changes_nothing() -> None:
    """The same batch delivered again (same offsets) changes neither the state
    nor any metric."""
    pipeline, store, metrics = make_pipeline()
    batch = {
        CLICKS: clicks(range(3)),
        ORDERS: [rec(ORDERS, 0, value_of("order", 0)), rec(ORDERS, 1, b"{")],
    }
    run(pipeline, batch)
    state = copy.deepcopy(store.state)
    before = {
        (m.name, s.name, tuple(sorted(s.labels.items()))): s.value
        for m in metrics.registry.collect()
        for s in m.samples
        if not s.name.endswith(("_created", "_bucket", "_sum", "_count"))
    }
    assert run(pipeline, batch) is None
    assert store.state == state
    after = {
        (m.name, s.name, tuple(sorted(s.labels.items()))): s.value
        for m in metrics.registry.collect()
        for s in m.samples
        if not s.name.endswith(("_created", "_bucket", "_sum", "_count"))
    }
    assert after == before


def test_redelivered_batch_to_a_new_worker_changes_nothing() -> None:
    """A worker that never loaded offsets gets an already-applied batch: its plan
    is stale, it learns the stored offsets, and nothing is counted twice."""
    pipeline, store, _metrics = make_pipeline()
    batch = {CLICKS: clicks(range(4))}
    run(pipeline, batch)
    state = copy.deepcopy(store.state)
    other = Pipeline(settings(), store, None, Metrics.create())
    assert run(other, batch) is None
    assert store.state == state
    assert other.applied == {"clicks:0": 3}


def test_overlapping_batch_counts_only_new_records() -> None:
    """Offsets 0..4, then 3..7: clicks 0..7 are counted once each (8)."""
    pipeline, store, _metrics = make_pipeline()
    run(pipeline, {CLICKS: clicks(range(5))})
    run(pipeline, {CLICKS: clicks(range(3, 8))})
    assert store.state.totals["clicks"] == 8
    assert store.state.offsets == {"clicks:0": 7}


def test_overlap_is_by_offset_not_by_id() -> None:
    """The skip is by offset: a new record at an old offset is not read, and a
    copy at a new offset is caught by event_id dedupe instead."""
    pipeline, store, _metrics = make_pipeline()
    run(pipeline, {CLICKS: clicks(range(2))})
    run(
        pipeline,
        {
            CLICKS: [
                rec(CLICKS, 1, value_of("click", 99)),  # offset 1 is applied
                rec(CLICKS, 2, value_of("click", 0)),  # click-0 again
            ]
        },
    )
    assert store.state.totals["clicks"] == 2
    assert store.state.offsets == {"clicks:0": 2}


def test_metrics_of_a_batch() -> None:
    """Records in are counted by topic and type (rejections as "invalid"),
    rejections by reason, out-of-window events, and milestones by kind."""
    pipeline, _store, metrics = make_pipeline()
    batch = {
        CLICKS: [
            rec(CLICKS, 0, value_of("click", 0)),
            rec(CLICKS, 1, value_of("click", 1)),
            rec(CLICKS, 2, value_of("click", 2, ts=END)),  # out of window
            rec(CLICKS, 3, b"\xff"),  # invalid_utf8
            rec(CLICKS, 4, value_of("cart", 4)),  # topic_mismatch
        ],
        CARTS: [rec(CARTS, 0, value_of("cart", 0))],
        ORDERS: [
            rec(ORDERS, 0, value_of("order", 0, amount_fen=600)),
            rec(ORDERS, 1, value_of("order", 1, amount_fen=400)),  # reaches 1,000
            rec(ORDERS, 2, value_of("cancel", 2)),
            rec(ORDERS, 3, value_of("order", 3, amount_fen=-5)),  # bad_value
            rec(ORDERS, 4, None),  # invalid_json
        ],
    }
    run(pipeline, batch)
    m = "presale_records_in_total"
    assert sample(metrics, m, topic="clicks", type="click") == 3
    assert sample(metrics, m, topic="clicks", type="invalid") == 2
    assert sample(metrics, m, topic="carts", type="cart") == 1
    assert sample(metrics, m, topic="orders", type="order") == 2
    assert sample(metrics, m, topic="orders", type="cancel") == 1
    assert sample(metrics, m, topic="orders", type="invalid") == 2
    r = "presale_records_rejected_total"
    assert sample(metrics, r, reason="invalid_utf8") == 1
    assert sample(metrics, r, reason="topic_mismatch") == 1
    assert sample(metrics, r, reason="bad_value") == 1
    assert sample(metrics, r, reason="invalid_json") == 1
    assert sample(metrics, "presale_records_out_of_window_total") == 1
    assert sample(metrics, "presale_milestones_total", kind="gmv_threshold") == 1
    assert sample(metrics, "presale_milestones_total", kind="yoy_double") == 0
    assert sample(metrics, "presale_stale_batches_total") == 0


def test_duplicates_and_later_milestones_metrics() -> None:
    """A re-sent order at a new offset counts as a duplicate; the milestone
    counter rises once per threshold across batches (1,000 then 5,000)."""
    pipeline, _store, metrics = make_pipeline()
    run(pipeline, {ORDERS: [rec(ORDERS, 0, value_of("order", 0, amount_fen=1_000))]})
    run(
        pipeline,
        {
            ORDERS: [
                rec(ORDERS, 1, value_of("order", 0, event_id="again")),
                rec(ORDERS, 2, value_of("order", 2, amount_fen=4_000)),
                rec(ORDERS, 3, value_of("order", 3, amount_fen=4_000)),
            ]
        },
    )
    assert sample(metrics, "presale_duplicates_total") == 1
    assert sample(metrics, "presale_milestones_total", kind="gmv_threshold") == 2


def test_stale_plan_is_retried_on_fresh_offsets() -> None:
    """Another worker applied offsets 0..2 first; this worker's plan from -1 is
    refused as stale, rebuilt from offset 2, and only 3..5 are added."""
    pipeline, store, metrics = make_pipeline()
    rules = store.rules
    other = [
        ("clicks:0", i, Event(f"click-{i}", "click", T0 + i, f"u{i}", "b1"))
        for i in range(3)
    ]
    apply_plan(store.state, plan_batch(other, rules, {}), rules, 0)
    assert store.state.offsets == {"clicks:0": 2}

    assert run(pipeline, {CLICKS: clicks(range(6))}) is None
    assert store.state.totals["clicks"] == 6  # click-0..click-5, each once
    assert store.state.offsets == {"clicks:0": 5}
    assert pipeline.applied == {"clicks:0": 5}
    assert sample(metrics, "presale_stale_batches_total") == 1


def test_stale_retry_does_not_double_count_other_records() -> None:
    """The retry only skips the offsets the other worker applied: with different
    event ids at offsets 0..2 here, the count is 3 (theirs) + 3 (ours, 3..5)."""
    pipeline, store, _metrics = make_pipeline()
    rules = store.rules
    other = [
        ("clicks:0", i, Event(f"theirs-{i}", "click", T0, "u", "b1")) for i in range(3)
    ]
    apply_plan(store.state, plan_batch(other, rules, {}), rules, 0)
    run(pipeline, {CLICKS: clicks(range(6))})
    assert store.state.totals["clicks"] == 6


def test_offsets_going_back_means_reread() -> None:
    """When the store's offset went back (lost writes), on_batch applies
    nothing and returns the partitions to re-read from stored + 1; re-reading
    then counts each click once (the ids are still remembered)."""
    pipeline, store, _metrics = make_pipeline()
    run(pipeline, {CLICKS: clicks(range(5))})
    store.state.offsets["clicks:0"] = 1  # as if the writes of 2..4 were lost
    state = copy.deepcopy(store.state)

    assert run(pipeline, {CLICKS: clicks(range(5, 7))}) == {CLICKS: 2}
    assert store.state == state
    assert pipeline.applied["clicks:0"] == 1

    assert run(pipeline, {CLICKS: clicks(range(2, 7))}) is None
    assert store.state.totals["clicks"] == 7
    assert store.state.offsets == {"clicks:0": 6}


def test_offsets_going_back_on_one_of_two_partitions() -> None:
    """Only partitions whose stored offset went back need re-reading from
    stored + 1; the others resume after their stored offset."""
    pipeline, store, _metrics = make_pipeline()
    run(
        pipeline,
        {
            CLICKS: clicks(range(3)),
            ORDERS: [rec(ORDERS, i, value_of("order", i)) for i in range(3)],
        },
    )
    store.state.offsets["orders:1"] = 0
    result = run(
        pipeline,
        {
            CLICKS: clicks(range(3, 4)),
            ORDERS: [rec(ORDERS, 3, value_of("order", 3))],
        },
    )
    assert result == {CLICKS: 3, ORDERS: 1}


def test_load_offsets() -> None:
    """load_offsets gives one past the stored offset (0 for a new partition) and
    teaches the pipeline the stored offsets."""
    pipeline, store, _metrics = make_pipeline()
    store.state.offsets["clicks:0"] = 41
    got = asyncio.run(pipeline.load_offsets({CLICKS, ORDERS}))
    assert got == {CLICKS: 42, ORDERS: 0}
    assert pipeline.applied == {"clicks:0": 41, "orders:1": -1}


def test_dead_letters_counted_in_the_store() -> None:
    """Without a producer, rejected records are still counted per reason in the
    state, and their offsets applied."""
    pipeline, store, _metrics = make_pipeline()
    run(pipeline, {CARTS: [rec(CARTS, 0, b"[]"), rec(CARTS, 1, b"x" * 70_000)]})
    assert store.state.dead_letters == {"not_object": 1, "too_large": 1}
    assert store.state.offsets == {"carts:2": 1}


def test_batch_decode_is_codecs_decode_record_by_record() -> None:
    """Pipeline.decode gives codecs.decode's answers, record by record, in order."""
    from streams.codecs import decode

    pipeline, _store, _metrics = make_pipeline()
    values: list[bytes | None] = [
        value_of("click", 1),
        value_of("click", 2, coupon="x"),  # a field the contract does not know
        value_of("click", 3, region=None),  # null: the default
        value_of("cart", 4),  # not a type clicks carry
        b"{not json",
        b"\xff\xfe",
        None,
        b"x" * (pipeline.settings.max_record_bytes + 1),
        value_of("click", 5, channel="livestream"),  # no room_id
        value_of("click", 6, channel="livestream", room_id="r1"),
    ]
    orders = [
        value_of("order", 7),
        value_of("order", 8, amount_fen=0),  # free: the exact path
        value_of("cancel", 9),
        value_of("order", 10, order_id=None),
    ]
    batch = {
        CLICKS: [rec(CLICKS, i, v) for i, v in enumerate(values)],
        ORDERS: [rec(ORDERS, i, v) for i, v in enumerate(orders)],
    }
    limit = pipeline.settings.max_record_bytes
    want = [
        (f"{short}:{tp.partition}", r.offset, decode(r.value, short, limit))
        for tp, short in ((CLICKS, "clicks"), (ORDERS, "orders"))
        for r in batch[tp]
    ]
    got = pipeline.decode(batch)
    assert got == want
    assert sum(isinstance(d, Event) for _, _, d in got) == 7
