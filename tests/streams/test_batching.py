"""streams.batching: the Faust consumer pieces presale replaces or configures."""

from __future__ import annotations

import asyncio

from streams.app import create_app
from streams.batching import BatchConsumerThread
from streams.settings import Settings


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
