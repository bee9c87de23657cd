"""The Faust app of `presale worker`: batch agent, web views, metrics, outbox."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from prometheus_client import start_http_server

from processors.events import INPUT_TOPICS
from streams import live
from streams.alerts import SurgeJudge
from streams.batching import BatchApp, BatchConsumer
from streams.connect import faust_credentials
from streams.errors import SettingsError
from streams.kafka import RenewableProducer, ensure_topics, log_end_offsets
from streams.metrics import Metrics
from streams.outbox import OutboxPublisher
from streams.pipeline import Pipeline
from streams.retry import TRANSIENT
from streams.settings import Settings
from streams.store import RedisStore, intset_advice
from streams.webreport import ReportBuilder, respond

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What the app's handlers share; built before the worker's loop runs."""

    settings: Settings
    metrics: Metrics
    store: RedisStore
    pipeline: Pipeline
    producer: RenewableProducer | None = None
    # Records this worker's partitions hold beyond what it applied (measure_lag).
    worker_lag: int | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Closed last at shutdown (the report builder's thread).
    closing: list[Callable[[], None]] = field(default_factory=list)

    async def start(self) -> None:
        """In the worker's loop, before the first fetch (aiokafka needs the loop)."""
        self.producer = RenewableProducer(self.settings)
        await self.producer.start()
        self.pipeline.producer = self.producer
        publisher = OutboxPublisher(self.settings, self.store.client, self.metrics)
        self.tasks.append(asyncio.ensure_future(publisher.run()))
        judge = SurgeJudge(
            self.store.client,
            self.settings.redis_prefix,
            self.settings.surge,
            self.settings.start_ms,
            self.settings.surge_lateness_ms,
            self.settings.surge_last_year,
            self.metrics,
            lambda: log_end_offsets(self.settings, INPUT_TOPICS),
            self.store.shards,
        )
        self.pipeline.after_apply = judge.batch_applied
        self.tasks.append(asyncio.ensure_future(judge.run()))
        self.tasks.append(asyncio.ensure_future(collect_garbage()))

    async def stop(self) -> None:
        with contextlib.suppress(Exception):  # the step is atomic either way
            await asyncio.wait_for(self.pipeline.flush(), timeout=10)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.producer is not None:
            await self.producer.stop()
        await self.store.close()
        for close in self.closing:
            with contextlib.suppress(Exception):
                close()


async def collect_garbage(young_every_s: float = 10.0, full_every: int = 6) -> None:
    """The cyclic collector on a clock (`run_worker` turns off its automatic
    runs): the young generations every 10 s, everything every minute.

    A run costs what is alive then (a batch or two in flight: about 100 ms),
    not what was allocated since, so running rarely is what makes it cheap.
    The worker makes a few dozen cyclic garbage objects a second (Faust,
    aiokafka, asyncio); they live a minute at most.
    """
    ticks = 0
    while True:
        await asyncio.sleep(young_every_s)
        ticks += 1
        gc.collect(2 if ticks % full_every == 0 else 1)


def create_app(
    settings: Settings, metrics: Metrics | None = None
) -> tuple[BatchApp, Runtime]:
    metrics = metrics or Metrics.create()
    metrics.distinct_ids_limit.labels("brands").set(settings.max_brands)
    metrics.distinct_ids_limit.labels("rooms").set(settings.max_rooms)
    store = RedisStore.from_settings(settings)
    pipeline = Pipeline(settings, store, None, metrics)
    runtime = Runtime(
        settings=settings, metrics=metrics, store=store, pipeline=pipeline
    )
    app = BatchApp(
        settings.app_id,
        broker=[f"kafka://{h.strip()}" for h in settings.kafka_bootstrap.split(",")],
        autodiscover=False,
        broker_credentials=faust_credentials(settings),
        datadir=settings.data_dir,
        topic_disable_leader=True,
        topic_partitions=settings.topic_partitions,
        broker_max_poll_records=settings.batch_max_records,
        consumer_auto_offset_reset="earliest",
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        # Faust's own pages list the cluster's workers (/router/) and read
        # tables (/table/); presale keeps its state in Redis and serves none.
        web_router_enabled=False,
        web_tables_enabled=False,
    )
    app.batch_topics = frozenset(settings.topic(t) for t in INPUT_TOPICS)
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    app.batch_handler = pipeline.on_batch
    app.offset_loader = pipeline.load_offsets
    app.batch_flush = pipeline.flush
    app.batch_startup = runtime.start
    app.batch_shutdown = runtime.stop

    live.install(
        app,
        store.client,
        settings.redis_prefix,
        settings.rules,
        metrics,
        lambda: runtime.worker_lag,
    )

    builder = ReportBuilder(settings)
    runtime.closing.append(builder.close)

    @app.page("/report")
    async def report(web: Any, request: Any) -> Any:
        return await respond(web, builder, request.query)

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json({"ok": True})

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        # Ready to count: input partitions assigned and the lag of each known
        # (its high watermark fetched). A worker with no partition (more workers
        # than partitions) stays unready: it is a standby.
        body = readiness(app)
        return web.json(body, status=200 if body["ready"] else 503)

    @app.timer(interval=2.0)
    async def measure_lag() -> None:
        """The lag of this worker's partitions, Kafka's end offsets (the high
        watermarks of the last fetch) minus the offsets stored in Redis, not
        the worker's own idea of them; and a Redis that went back repaired.

        Redis restarted from its AOF can lose its last second; the next step of
        a partition finds out, but a quiet partition has no next step. Here
        every partition is checked every 2 s: one whose stored offset is below
        what this worker applied is read again from the store (issue 13 e).
        """
        consumer = app.consumer
        tps = [tp for tp in consumer.assignment() if tp.topic in app.batch_topics]
        try:
            stored_by_name = await store.applied_offsets(
                pipeline.name(tp) for tp in tps
            )
        except TRANSIENT as exc:  # Redis away: the batch path retries it too
            log.warning("lag: reading the stored offsets failed (%r)", exc)
            return
        stored = {tp: stored_by_name[pipeline.name(tp)] for tp in tps}
        by_topic: dict[str, int] = {}
        for tp, applied in stored.items():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            short = tp.topic.removeprefix(settings.topic_prefix + ".")
            by_topic[short] = by_topic.get(short, 0) + max(0, highwater - applied - 1)
        for short in INPUT_TOPICS:
            metrics.consumer_lag.labels(short).set(by_topic.get(short, 0))
        runtime.worker_lag = sum(by_topic.values())
        if pipeline.latest_event_ms:
            metrics.freshness.set(time.time() - pipeline.latest_event_ms / 1000)
        assert isinstance(consumer, BatchConsumer)
        try:
            async with consumer.batch_lock:
                reseek = await pipeline.went_back(stored)
        except TRANSIENT as exc:
            log.warning("lag: checking the stored offsets failed (%r)", exc)
            return
        if reseek:
            await consumer.seek_owned(reseek)
        try:  # aggregates a worker left unfolded when it died (lua/fold.lua)
            for milestone in await store.fold_pending(int(time.time() * 1000)):
                metrics.milestones.labels(milestone.kind).inc()
        except TRANSIENT as exc:
            log.warning("lag: folding the shards' aggregates failed (%r)", exc)

    return app, runtime


def readiness(app: BatchApp) -> dict[str, Any]:
    """Assigned input partitions, how many have a known lag, and the verdict."""
    try:
        consumer = app.consumer
        tps = [tp for tp in consumer.assignment() if tp.topic in app.batch_topics]
        known = sum(1 for tp in tps if consumer.highwater(tp) is not None)
    except Exception:  # no consumer yet (starting) or it is being rebuilt
        tps, known = [], 0
    return {
        "ready": bool(tps) and known == len(tps),
        "partitions": len(tps),
        "lag_known": known,
    }


async def preflight(settings: Settings) -> None:
    """Fail with one line, before Faust starts, when Redis or Kafka is not there."""
    store = RedisStore.from_settings(settings)
    try:
        await store.ping()
        await store.pin_rules(settings.pinned_rules())
        advice = intset_advice(await store.intset_limit(), settings.dedupe_shards)
    finally:
        await store.close()
    if advice:
        log.warning("%s", advice)
    # A refused SASL login is logged by aiokafka on its way to the one-line
    # error below; keep the worker's failure to that one line, as the CLI's.
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        await ensure_topics(settings)
    finally:
        aiokafka_log.setLevel(level)


def _port_free(host: str, port: int, variable: str) -> None:
    with socket.socket() as s:
        # As the servers do: a port left in TIME_WAIT by closed clients is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            msg = f"cannot listen on {host}:{port} ({exc.strerror}): set {variable}"
            raise SettingsError(msg) from exc


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    """Run the worker until it is stopped (SIGINT/SIGTERM)."""
    _port_free(settings.web_host, settings.web_port, "PRESALE_WEB_PORT")
    _port_free(settings.metrics_host, settings.metrics_port, "PRESALE_METRICS_PORT")
    asyncio.run(preflight(settings))
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)  # Faust makes one level
    app, runtime = create_app(settings)
    # A batch makes about 10 objects per record, nearly all freed by reference
    # counting. The cyclic collector, run by allocation counts, ran in the middle
    # of batches over their hundred thousand live objects: with the default
    # threshold it cost about 30% of decode and plan time, and still 25% of the
    # worker's CPU with a threshold of 100,000 (measured with `make bench`). So
    # it runs on a clock instead (`collect_garbage`), between batches.
    gc.freeze()
    gc.disable()
    start_http_server(
        settings.metrics_port,
        addr=settings.metrics_host,
        registry=runtime.metrics.registry,
    )
    logging.getLogger("presale").info(
        "campaign %s, metrics on %s:%d",
        settings.campaign_id,
        settings.metrics_host,
        settings.metrics_port,
    )
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
    return 0
