"""Read whole output topics (milestones, dead letters) back from the real Kafka."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from tests.support.services import KAFKA


async def _read_all(topic: str) -> list[ConsumerRecord]:
    # Read committed, as a consumer of the output topics must: a fenced outbox
    # publisher's records are aborted, never published (docs/exactly-once.md).
    consumer = AIOKafkaConsumer(
        bootstrap_servers=KAFKA,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return []
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[ConsumerRecord] = []
        behind = set(tps)
        while behind:
            for recs in (await consumer.getmany(timeout_ms=1000)).values():
                out.extend(recs)
            for tp in list(behind):
                if await consumer.position(tp) >= ends[tp]:
                    behind.discard(tp)
        return out
    finally:
        await consumer.stop()


def read_all(topic: str) -> list[ConsumerRecord]:
    """Every record on `topic` now, from all partitions."""
    return asyncio.run(_read_all(topic))
