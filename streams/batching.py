"""A Faust consumer that hands whole fetched batches to one handler.

Faust 0.15.3's own path costs about 60 µs per event (four asyncio tasks per
message in `Consumer._drain_messages`, a queue hop and an ack each): about 16k
events/s at best, measured here. This subclass keeps everything else of Faust
(group membership, rebalances, the Fetcher service, the web server, the CLI) and
replaces only the drain loop, so each `getmany` result goes to the handler as one
batch: about 1.5 µs per record of overhead.

Offsets live in Redis beside the counters (written in the same atomic step), so
the consumer commits nothing to Kafka and seeks to the Redis offsets after every
assignment. This relies on private Faust methods (`_drain_messages`,
`_wait_next_records`, `_new_transport`): faust-streaming is pinned for that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.settings import Settings

log = logging.getLogger(__name__)

Batch = dict[TP, list[ConsumerRecord]]
# The handler returns the partitions it wants read again from an offset (for
# example after Redis lost its last second of writes), or None.
BatchHandler = Callable[[Batch], Awaitable[Mapping[TP, int] | None]]
# Next offset to read for each assigned partition, or -1 for "from the start".
OffsetLoader = Callable[[set[TP]], Awaitable[Mapping[TP, int]]]


class BatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, draining whole batches instead of messages."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_lock = asyncio.Lock()

    @property
    def batch_app(self) -> BatchApp:
        assert isinstance(self.app, BatchApp)
        return self.app

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_start(self) -> None:
        await super().on_start()
        if self.batch_app.batch_startup is not None:
            await self.batch_app.batch_startup()
        # Subscribe through the Conductor, inside the running loop (at import time
        # the worker hangs). acks=False: Faust tracks no acks for these topics.
        app = self.batch_app
        self.app.topics.add(self.app.topic(*sorted(app.batch_topics), acks=False))

    async def on_stop(self) -> None:
        await super().on_stop()
        if self.batch_app.batch_shutdown is not None:
            await self.batch_app.batch_shutdown()

    async def perform_seek(self) -> None:
        # Called after every assignment (after the on_partitions_assigned signal,
        # which is too early: a seek there is overwritten).
        app = self.batch_app
        tps = {tp for tp in self.assignment() if tp.topic in app.batch_topics}
        if not tps or app.offset_loader is None:
            await super().perform_seek()
            return
        stored = await app.offset_loader(tps)
        fresh = [tp for tp in tps if stored.get(tp, 0) <= 0]
        if fresh:  # nothing applied yet: from the start, never Kafka's commits
            await self._thread.seek_to_beginning(
                *(TopicPartition(tp.topic, tp.partition) for tp in fresh)
            )
        known = {tp: off for tp, off in stored.items() if off > 0 and tp in tps}
        if known:
            await self.seek_wait(known)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        async with self.batch_lock:  # a batch in flight finishes first
            if self.batch_app.batch_flush is not None:
                # A re-read it asks for is moot: perform_seek() follows, from Redis.
                await self.batch_app.batch_flush()
            await super().on_partitions_revoked(revoked)

    async def _seek_owned(self, offsets: Mapping[TP, int]) -> None:
        owned = self.assignment()
        mine = {tp: o for tp, o in offsets.items() if tp in owned}
        if mine:
            await self.seek_wait(mine)

    async def seek_owned(self, offsets: Mapping[TP, int]) -> None:
        """Read these partitions again from these offsets (those still assigned;
        the lag timer's repair after Redis went back, `streams/app.py`)."""
        try:
            await self._seek_owned(offsets)
        except KafkaError as exc:  # not assigned any more: its new owner reads it
            log.info("not seeking %s: %r", sorted(offsets), exc)

    async def _rewind(self, records: Mapping[TP, list[ConsumerRecord]]) -> None:
        """Read these records again later: they were fetched and not applied.

        Records fetched while a rebalance runs are set aside. The seek after the
        assignment usually rewinds their partitions, but it can run first, between
        fetching them and handing them over: without this the consumer would go on
        past them, and they would never be applied. (The pipeline checks each
        batch's first offset as well: `Pipeline._skipped`.)
        """
        offsets = {
            tp: recs[0].offset
            for tp, recs in records.items()
            if tp.topic in self.batch_app.batch_topics and recs
        }
        if not offsets:
            return
        try:
            await self._seek_owned(offsets)
        except KafkaError as exc:  # not assigned any more: moot
            log.info("not rewinding %s: %r", sorted(offsets), exc)

    async def _drain_messages(self, fetcher: Any) -> None:  # consumer.py:1170
        app = self.batch_app
        handler = app.batch_handler
        assert handler is not None, "BatchApp.batch_handler is not set"
        stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set
        try:
            while not (stopped() or fetcher_stopped()):
                records, active = await self._wait_next_records(0.2)
                if not records or self.should_stop:
                    if app.batch_flush is not None:  # idle: settle the last step
                        async with self.batch_lock:
                            reseek = await app.batch_flush()
                        if reseek:
                            await self._seek_owned(reseek)
                    continue
                batch = {
                    tp: recs
                    for tp, recs in records.items()
                    if tp.topic in app.batch_topics and (active is None or tp in active)
                }
                if len(batch) != len(records):
                    await self._rewind(
                        {tp: r for tp, r in records.items() if tp not in batch}
                    )
                if not batch:
                    continue
                async with self.batch_lock:
                    # Rebalancing: not applied now, rewound (outside the lock,
                    # which the revocation waits for).
                    set_aside = not self.flow_active
                    reseek = None if set_aside else await handler(batch)
                if set_aside:
                    await self._rewind(batch)
                    continue
                if reseek:
                    await self._seek_owned(reseek)
                await asyncio.sleep(0)  # let the web server and rebalances run
        except self.consumer_stopped_errors:
            if not app.should_stop:
                raise
        except asyncio.CancelledError:
            if not app.should_stop:
                raise


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with the broker's fetch wait set by the app.

    aiokafka keeps one fetch request in flight per broker, for the partitions
    with nothing buffered. When those are drained (at the end of their log)
    the broker holds the request up to `fetch_max_wait_ms`, which Faust fixes
    at 1,500 ms, while the partitions that do have data wait for it to come
    back: measured here, the worker sat idle 0.9 s of every 1.9 s.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        app = self.app
        assert isinstance(app, BatchApp)
        consumer._fetch_max_wait_ms = app.fetch_max_wait_ms  # read by start()
        return consumer


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer


class BatchApp(faust.App):
    """A Faust app whose input topics are drained in batches by one handler."""

    batch_topics: frozenset[str] = frozenset()
    fetch_max_wait_ms: int = Settings.fetch_max_wait_ms  # create_app sets it
    batch_handler: BatchHandler | None = None
    offset_loader: OffsetLoader | None = None
    # Settles the handler's step in flight: when idle, before a rebalance.
    batch_flush: Callable[[], Awaitable[Mapping[TP, int] | None]] | None = None
    # Run inside the worker's loop before the first fetch, and after the last.
    batch_startup: Callable[[], Awaitable[None]] | None = None
    batch_shutdown: Callable[[], Awaitable[None]] | None = None

    def _new_transport(self) -> Any:  # app/base.py:1932
        return BatchTransport(self.conf.broker_consumer, self)
