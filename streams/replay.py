"""Publish recorded streams to the input topics, in file order, paced or flat out."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from tqdm import tqdm

from streams.errors import KafkaUnavailable, RecordingError
from streams.kafka import ensure_topics, start_producer
from streams.recordings import Entry, iter_entries, open_recording, read_header
from streams.settings import Settings

# Pacing follows the event-time clock; a record more than 10 minutes ahead of it
# (a malformed ts, a far-future test record) is sent at once, not waited for,
# unless 50 such records in a row show the stream itself jumped.
_MAX_JUMP_MS = 600_000
_REANCHOR_AFTER = 50

# Keep this many sends in flight before waiting for their acks: enough to fill
# the producer's batches (about 256 KB each), small enough to bound memory.
_IN_FLIGHT = 20_000

# How long a record may wait for its partition's leader (a broker restarting)
# before the replay gives up on it. aiokafka's default, 40 s, is shorter than a
# broker that reloads many partitions takes to come back; the idempotent
# producer retries without duplicates meanwhile.
_DELIVERY_TIMEOUT_MS = 180_000


@dataclass
class ReplayResult:
    published: int  # acknowledged by Kafka
    total: int
    seconds: float
    interrupted: bool


def count_records(paths: list[str]) -> int:
    total = 0
    for path in paths:
        try:
            with open_recording(path) as f:
                total += sum(1 for line in f if line.strip())
            if read_header(path) is not None:
                total -= 1  # the format line is not a record
        except (OSError, EOFError) as exc:  # EOFError: a gzip cut short
            msg = f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
            raise RecordingError(msg) from exc
    return total


def _event_ms(value: bytes | None) -> int | None:
    """The `ts` of a record, for pacing; malformed records go out at once."""
    if value is None:
        return None
    try:
        ts = orjson.loads(value).get("ts")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return ts if type(ts) is int else None


class _Pacer:
    """Wall-clock delay before each record, to replay at `speed` x event time."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.clock_ms: int | None = None
        self.anchor_wall = 0.0
        self.anchor_ms = 0
        self.jumps = 0

    def delay_s(self, ts_ms: int | None) -> float:
        if ts_ms is None:
            return 0.0
        if self.clock_ms is None or self.jumps >= _REANCHOR_AFTER:
            self.clock_ms = self.anchor_ms = ts_ms
            self.anchor_wall = time.monotonic()
            self.jumps = 0
            return 0.0
        if (
            ts_ms - self.clock_ms > _MAX_JUMP_MS
            or ts_ms < self.anchor_ms - _MAX_JUMP_MS
        ):
            self.jumps += 1
            return 0.0
        self.jumps = 0
        self.clock_ms = max(self.clock_ms, ts_ms)
        due = self.anchor_wall + (self.clock_ms - self.anchor_ms) / 1000 / self.speed
        return due - time.monotonic()


def _records(paths: list[str]) -> Iterator[Entry]:
    for path in paths:
        try:
            yield from iter_entries(path)
        except (OSError, EOFError) as exc:  # EOFError: a gzip cut short
            msg = f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
            raise RecordingError(msg) from exc


async def _send(
    producer: AIOKafkaProducer,
    topics: dict[str, str],
    partitions: dict[str, int],
    entry: Entry,
    keep_timestamps: bool,
) -> asyncio.Future[object]:
    part = entry.partition
    future: asyncio.Future[object] = await producer.send(
        topics[entry.topic],
        entry.value,
        key=entry.key,
        partition=part if part is not None and part < partitions[entry.topic] else None,
        timestamp_ms=entry.ts_ms if keep_timestamps else None,
        headers=list(entry.headers) or None,
    )
    return future


async def replay(
    settings: Settings,
    paths: list[str],
    speed: float | None,
    progress: bool = True,
    keep_timestamps: bool = False,
) -> ReplayResult:
    """Publish `paths`; `speed` None is flat out, N is N times event time (the
    Kafka timestamps of a recording that has them). A record that names its
    partition goes to it when the topic has that partition, else its key
    chooses; `keep_timestamps` sends the recorded Kafka timestamps."""
    total = count_records(paths)
    await ensure_topics(settings)
    producer = await start_producer(settings, request_timeout_ms=_DELIVERY_TIMEOUT_MS)
    topics = {short: settings.topic(short) for short in ("clicks", "carts", "orders")}
    partitions: dict[str, int] = {}
    published = 0
    started = time.monotonic()
    pacer = _Pacer(speed) if speed is not None else None
    pending: list[asyncio.Future[object]] = []
    bar = tqdm(
        total=total, unit="ev", unit_scale=True, disable=not progress, smoothing=0.1
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)  # Ctrl-C: stop cleanly
    interrupted = False
    try:
        for short, topic in topics.items():
            partitions[short] = len(await producer.partitions_for(topic))
        for entry in _records(paths):
            if stop.is_set():
                interrupted = True
                break
            if pacer is not None:
                ts_ms = entry.ts_ms
                if ts_ms is None:
                    ts_ms = _event_ms(entry.value)
                delay = pacer.delay_s(ts_ms)
                if delay > 0.002:
                    await asyncio.gather(*pending)
                    bar.update(len(pending))
                    pending.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=delay)
            pending.append(
                await _send(producer, topics, partitions, entry, keep_timestamps)
            )
            published += 1
            if len(pending) >= _IN_FLIGHT:
                await asyncio.gather(*pending)
                bar.update(len(pending))
                pending.clear()
        await asyncio.gather(*pending)
        bar.update(len(pending))
        pending.clear()
    except KafkaError as exc:
        msg = f"publishing to Kafka at {settings.kafka_bootstrap} failed: {exc}"
        raise KafkaUnavailable(msg) from exc
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        bar.close()
        with contextlib.suppress(TimeoutError, KafkaError):
            await asyncio.wait_for(producer.stop(), timeout=30)
    return ReplayResult(published, total, time.monotonic() - started, interrupted)
