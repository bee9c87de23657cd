"""streams.batching: the Faust consumer pieces presale replaces or configures."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.structs import ConsumerRecord
from faust.types import TP

from streams.app import create_app
from streams.batching import BatchConsumerThread
from streams.settings import Settings
from tests.streams.test_pipeline_memory import rec


def test_worker_consumer_fetch_wait_is_the_setting() -> None:
    """Faust fixes aiokafka's fetch_max_wait_ms at 1,500; the worker's consumer
    takes PRESALE_FETCH_MAX_WAIT_MS instead (no broker is contacted here)."""

    async def run() -> tuple[object, int]:
        settings = Settings.from_env({"PRESALE_FETCH_MAX_WAIT_MS": "37"}, load=False)
        app, runtime = create_app(settings)
        try:
            thread = app.consumer._new_consumer_thread()
            consumer = thread._create_worker_consumer(app.transport)
            return thread, consumer._fetch_max_wait_ms
        finally:
            await runtime.store.close()

    thread, wait_ms = asyncio.run(run())
    assert isinstance(thread, BatchConsumerThread)
    assert wait_ms == 37


def test_fetch_wait_default_is_short() -> None:
    assert Settings.from_env({}, load=False).fetch_max_wait_ms == 20


def _records(tp: TP, offsets: range) -> list[ConsumerRecord[bytes, bytes]]:
    return [rec(tp, i, b"{}") for i in offsets]


def test_records_fetched_while_rebalancing_are_read_again() -> None:
    """Records handed over while the flow is stopped (a rebalance) are not
    applied, and their partition is sought back to the first of them: the
    assignment's own seek may already have run, and without this the consumer
    would go on past them. The next records are handled as usual."""
    settings = Settings.from_env({}, load=False)
    clicks, orders = TP(settings.topic("clicks"), 0), TP(settings.topic("orders"), 3)
    handled: list[dict[TP, list[int]]] = []
    seeks: list[dict[TP, int]] = []

    async def run() -> None:
        app, runtime = create_app(settings)
        consumer: Any = app.consumer
        script = [
            ({clicks: _records(clicks, range(5, 9))}, False),
            ({orders: _records(orders, range(2, 4))}, False),
            ({clicks: _records(clicks, range(5, 12))}, True),
        ]

        async def wait_next_records(timeout: float) -> tuple[dict[TP, Any], None]:
            if not script:
                consumer._stopped.set()
                return {}, None
            records, flowing = script.pop(0)
            consumer.flow_active = flowing
            return records, None

        async def seek_wait(offsets: dict[TP, int]) -> None:
            seeks.append(dict(offsets))

        async def handler(batch: dict[TP, list[Any]]) -> None:
            handled.append({tp: [r.offset for r in recs] for tp, recs in batch.items()})

        consumer._wait_next_records = wait_next_records
        consumer.seek_wait = seek_wait
        consumer.assignment = lambda: {clicks}  # orders:3 was revoked meanwhile
        app.batch_handler = handler
        app.batch_flush = None
        try:
            await consumer._drain_messages(SimpleNamespace(_stopped=asyncio.Event()))
        finally:
            await runtime.store.close()

    asyncio.run(run())
    assert seeks == [{clicks: 5}]
    assert handled == [{clicks: list(range(5, 12))}]
