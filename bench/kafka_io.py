"""Kafka side of the benchmark: fresh topics, a fast bulk loader, end offsets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import UnknownTopicOrPartitionError

from bench.workload import PARTITIONS, TOPICS

# The local broker (deploy/local/services.sh), or the one PRESALE_KAFKA_BOOTSTRAP names.
BOOTSTRAP = os.environ.get("PRESALE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
OUTPUTS = ("milestones", "alerts", "deadletter")
# One produce batch per partition at a time (aiokafka keeps one in flight per
# partition); 512 KiB is ~2,800 records of ~186 B, half the broker's 1 MB limit.
BATCH_BYTES = 524_288
# Records split per partition at a time: bounds the loader's memory on a soak.
CHUNK_RECORDS = 1_000_000

Record = tuple[int, int, bytes | None, bytes]  # topic index, partition, key, value


@dataclass(frozen=True, slots=True)
class LoadResult:
    records: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def topic_names(prefix: str) -> list[str]:
    return [f"{prefix}.{t}" for t in TOPICS]


async def create_topics(prefix: str, outputs: bool = True) -> None:
    """The three input topics (and presale's outputs) with 6 partitions each."""
    names = topic_names(prefix) + (
        [f"{prefix}.{t}" for t in OUTPUTS] if outputs else []
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()
    # Wait until every partition has a leader, or the first produce fails.
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP)
    await consumer.start()
    try:
        for _ in range(100):
            await consumer._client.force_metadata_update()
            if all(
                len(consumer.partitions_for_topic(n) or ()) == PARTITIONS for n in names
            ):
                return
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()


async def delete_topics(prefix: str, separator: str = ".") -> None:
    """Every topic named `<prefix><separator>*` (the run's disk goes with it)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        start = prefix + separator
        mine = [t for t in await admin.list_topics() if t.startswith(start)]
        if mine:
            with contextlib.suppress(UnknownTopicOrPartitionError):
                await admin.delete_topics(mine)
    finally:
        await admin.close()


async def end_offsets(prefix: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP)
    await consumer.start()
    try:
        tps = [
            TopicPartition(name, p) for name in topic_names(prefix) for p in range(6)
        ]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


def producer(**overrides: object) -> AIOKafkaProducer:
    options: dict[str, object] = {
        "bootstrap_servers": BOOTSTRAP,
        "acks": 1,
        "max_batch_size": BATCH_BYTES,
        "max_request_size": 8 * 1_048_576,
        "linger_ms": 5,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


async def _send_partition(
    kafka: AIOKafkaProducer,
    topic: str,
    partition: int,
    records: list[tuple[bytes | None, bytes]],
    futures: list[asyncio.Future[object]],
) -> None:
    batch = kafka.create_batch()
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:
            futures.append(await kafka.send_batch(batch, topic, partition=partition))
            batch = kafka.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                msg = f"a {len(value)}-byte record does not fit a produce batch"
                raise ValueError(msg)
    if batch.record_count():
        futures.append(await kafka.send_batch(batch, topic, partition=partition))


async def load(prefix: str, records: Iterable[Record]) -> LoadResult:
    """Publish pre-serialised records with whole produce batches, flat out."""
    names = topic_names(prefix)
    kafka = producer()
    await kafka.start()
    started = time.perf_counter()
    total = 0
    try:
        iterator: Iterator[Record] = iter(records)
        while chunk := list(islice(iterator, CHUNK_RECORDS)):
            by_tp: dict[tuple[int, int], list[tuple[bytes | None, bytes]]] = {}
            for topic, partition, key, value in chunk:
                by_tp.setdefault((topic, partition), []).append((key, value))
            futures: list[asyncio.Future[object]] = []
            await asyncio.gather(
                *(
                    _send_partition(kafka, names[t], p, recs, futures)
                    for (t, p), recs in by_tp.items()
                )
            )
            await asyncio.gather(*futures)
            total += len(chunk)
        return LoadResult(total, time.perf_counter() - started)
    finally:
        await kafka.stop()
