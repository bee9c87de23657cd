"""The worker's producer is replaced when the broker refuses it for good.

After a broker restart aiokafka's idempotent producer can be left with sequence
numbers the broker no longer accepts (OutOfOrderSequenceNumber on every send):
the outbox and the dead letters must not stall on it (streams/kafka.py).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.errors import KafkaConnectionError, OutOfOrderSequenceNumber

from streams.kafka import RenewableProducer
from streams.settings import Settings
from tests.integration.helpers import read_topic

pytestmark = pytest.mark.integration


def test_poisoned_producer_is_replaced_and_sends() -> None:
    topic = f"renewal-{uuid.uuid4().hex[:8]}"

    async def run() -> tuple[bool, bool]:
        p = RenewableProducer(Settings.from_env({}, load=False))
        await p.start()
        try:
            first = p.current
            await (await p.send(topic, b"before", key=b"k"))
            await p.renew_if_poisoned(KafkaConnectionError())  # a blip: kept
            kept = p.current is first
            await p.renew_if_poisoned(OutOfOrderSequenceNumber())
            replaced = p.current is not first and p.current is not None
            await (await p.send(topic, b"after", key=b"k"))
            return kept, replaced
        finally:
            await p.stop()

    kept, replaced = asyncio.run(run())
    assert kept and replaced
    assert [r.value for r in read_topic(topic)] == [b"before", b"after"]
