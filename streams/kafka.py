"""Kafka plumbing shared by the worker and the CLI: topics, producers, offsets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaConnectionError,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
    ProducerFenced,
    TopicAlreadyExistsError,
    UnknownProducerId,
)

from processors.events import INPUT_TOPICS
from streams.connect import kafka_auth
from streams.errors import KafkaUnavailable
from streams.settings import Settings

log = logging.getLogger(__name__)

OUTPUT_TOPICS = ("milestones", "alerts", "deadletter")


def _unavailable(settings: Settings, exc: BaseException) -> KafkaUnavailable:
    detail = str(exc) or exc.__class__.__name__
    if settings.kafka_security_protocol != "PLAINTEXT":
        # aiokafka reports a refused SASL login or TLS handshake only as a
        # failed bootstrap: name what to check.
        user = settings.kafka_sasl_username
        detail += (
            f" (security {settings.kafka_security_protocol}"
            + (f", SASL user {user!r}" if user else "")
            + ": is the broker up, and are the credentials and TLS files right?)"
        )
    return KafkaUnavailable(
        f"cannot reach Kafka at {settings.kafka_bootstrap}: {detail}"
    )


async def ensure_topics(settings: Settings) -> None:
    """Create the input and output topics that do not exist yet."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        request_timeout_ms=10_000,
        **kafka_auth(settings),
    )
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(settings.topic(t), settings.topic_partitions, 1)
            for t in (*INPUT_TOPICS, *OUTPUT_TOPICS)
            if settings.topic(t) not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # another was first
                await admin.create_topics(wanted)
    except (KafkaConnectionError, OSError) as exc:
        raise _unavailable(settings, exc) from exc
    finally:
        await admin.close()


def producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 262_144,
        "max_request_size": 1_048_576 * 4,
        **kafka_auth(settings),
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


async def start_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    p = producer(settings, **overrides)
    try:
        await p.start()
    except (KafkaError, OSError) as exc:
        await p.stop()
        raise _unavailable(settings, exc) from exc
    return p


# Errors after which an idempotent producer never sends again. After a broker
# restart aiokafka's can be left with sequence numbers the broker no longer
# accepts: OutOfOrderSequenceNumber on every send, for good. A new producer (a
# new producer id) starts its sequences afresh.
POISONED = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    ProducerFenced,
    ProducerClosed,
)


class RenewableProducer:
    """The worker's producer (dead letters, the outbox), replaced when poisoned."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.current: AIOKafkaProducer | None = None

    async def start(self) -> None:
        p = producer(self.settings)
        await p.start()
        self.current = p

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        if self.current is None:  # a renewal failed (Kafka away): try again
            await self.start()
        assert self.current is not None
        future: asyncio.Future[Any] = await self.current.send(
            topic, value, key=key, headers=headers
        )
        return future

    async def renew_if_poisoned(self, exc: BaseException) -> None:
        """Replace the producer when `exc` says it can never send again."""
        if not isinstance(exc, POISONED):
            return
        old, self.current = self.current, None
        log.warning("Kafka producer refused for good (%r): starting a new one", exc)
        if old is not None:
            with contextlib.suppress(Exception):
                await old.stop()
        await self.start()

    async def stop(self) -> None:
        if self.current is not None:
            await self.current.stop()
            self.current = None


async def log_end_offsets(settings: Settings, topics: Iterable[str]) -> dict[str, int]:
    """The next offset to be written of every partition, as "short:partition"."""
    ends = EndOffsets(settings)
    try:
        return await ends.read(topics)
    finally:
        await ends.close()


class EndOffsets:
    """`log_end_offsets` over one client kept open between reads: GET /report
    asks every second at most, and a client a read cost 0.5 s of connects."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: AIOKafkaConsumer | None = None

    async def read(self, topics: Iterable[str]) -> dict[str, int]:
        settings = self.settings
        try:
            if self._consumer is None:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=settings.kafka_bootstrap,
                    request_timeout_ms=10_000,
                    **kafka_auth(settings),
                )
                self._consumer = consumer
                await consumer.start()
            consumer = self._consumer
            tps: list[TopicPartition] = []
            for short in topics:
                parts = consumer.partitions_for_topic(settings.topic(short))
                if parts is None:
                    await consumer._client.force_metadata_update()
                    parts = (
                        consumer.partitions_for_topic(settings.topic(short)) or set()
                    )
                tps.extend(TopicPartition(settings.topic(short), p) for p in parts)
            ends = await consumer.end_offsets(tps) if tps else {}
            starts = await consumer.beginning_offsets(tps) if tps else {}
        except (KafkaError, OSError) as exc:
            await self.close()  # a fresh client next time
            raise _unavailable(settings, exc) from exc
        prefix = settings.topic_prefix + "."
        return {
            f"{tp.topic.removeprefix(prefix)}:{tp.partition}": end
            for tp, end in ends.items()
            if end > starts.get(tp, 0)
        }

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


def lag(end_offsets: dict[str, int], applied: dict[str, int]) -> int:
    """Records published but not applied: end offset minus (last applied + 1)."""
    return sum(max(0, end - applied.get(tp, -1) - 1) for tp, end in end_offsets.items())
