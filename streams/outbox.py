"""Publish milestones and alerts from the Redis outbox to Kafka, each exactly once.

The atomic apply step appends each new milestone (and, later, alert) to a Redis
stream. One worker at a time holds a lease and publishes that stream in order,
each record with a `presale-id` header. On taking the lease it reads the output
topics to the end and skips every id already there, so a crash between a send
and the trim, a lease hand-over, or Redis losing its last second (and the apply
step re-emitting a milestone) never publishes one twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from streams.connect import kafka_auth
from streams.kafka import RenewableProducer
from streams.metrics import Metrics
from streams.settings import Settings

log = logging.getLogger(__name__)

ID_HEADER = "presale-id"
LEASE_MS = 10_000  # a dead publisher's lease passes on within 10 s
_IDLE_S = 0.1


class OutboxPublisher:
    def __init__(
        self,
        settings: Settings,
        client: Redis,
        producer: RenewableProducer,
        metrics: Metrics,
        topics: tuple[str, ...] = ("milestones", "alerts"),
    ) -> None:
        self.settings = settings
        self.client = client
        self.producer = producer
        self.metrics = metrics
        self.topics = topics
        self.key = settings.redis_prefix + "outbox"
        self.lease_key = settings.redis_prefix + "outbox:lease"
        self.owner = uuid.uuid4().hex
        self.published: set[str] | None = None

    async def hold_lease(self) -> bool:
        if await self.client.set(self.lease_key, self.owner, nx=True, px=LEASE_MS):
            return True
        holder: Any = await self.client.get(self.lease_key)
        if holder is not None and holder.decode() == self.owner:
            await self.client.pexpire(self.lease_key, LEASE_MS)
            return True
        return False

    async def load_published(self) -> set[str]:
        """Every id already on the output topics (they are small: one per fact)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_auto_commit=False,
            **kafka_auth(self.settings),
        )
        seen: set[str] = set()
        await consumer.start()
        try:
            tps: list[TopicPartition] = []
            for short in self.topics:
                name = self.settings.topic(short)
                parts = consumer.partitions_for_topic(name)
                if parts is None:
                    await consumer._client.force_metadata_update()
                    parts = consumer.partitions_for_topic(name) or set()
                tps.extend(TopicPartition(name, p) for p in parts)
            if not tps:
                return seen
            ends = await consumer.end_offsets(tps)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            remaining = {tp for tp, end in ends.items() if end > 0}
            while remaining:
                batch = await consumer.getmany(timeout_ms=1000)
                for tp, recs in batch.items():
                    for rec in recs:
                        for key, value in rec.headers:
                            if key == ID_HEADER:
                                seen.add(value.decode())
                    if recs and recs[-1].offset + 1 >= ends[tp]:
                        remaining.discard(tp)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        return seen

    async def publish_once(self) -> int:
        """Publish what is waiting; returns how many records went out."""
        if not await self.hold_lease():
            self.published = None
            return 0
        if self.published is None:
            self.published = await self.load_published()
        entries: Any = await self.client.xrange(self.key, count=500)
        sent = 0
        for entry_id, fields in entries:
            ident = fields[b"id"].decode()
            if ident not in self.published:
                topic = fields[b"topic"].decode()
                future = await self.producer.send(
                    self.settings.topic(topic),
                    fields[b"value"],
                    key=fields[b"key"],
                    headers=[(ID_HEADER, ident.encode())],
                )
                await future
                self.published.add(ident)
                self.metrics.outbox_published.labels(topic).inc()
                sent += 1
            await self.client.xdel(self.key, entry_id)
        return sent

    async def run(self) -> None:
        while True:
            try:
                if await self.publish_once() == 0:
                    await asyncio.sleep(_IDLE_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep publishing through Kafka or Redis blips
                log.exception("outbox publishing failed; retrying in 1 s")
                self.published = None  # re-read the topics: nothing goes twice
                await asyncio.sleep(1.0)
                try:
                    await self.producer.renew_if_poisoned(exc)
                except Exception:  # Kafka still away: the next round tries again
                    log.exception("starting a new Kafka producer failed")
