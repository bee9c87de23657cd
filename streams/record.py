"""Capture the input topics into a versioned recording that `replay` reproduces."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import heapq
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from tqdm import tqdm

from streams.connect import kafka_auth
from streams.errors import KafkaUnavailable, RecordingError
from streams.recordings import FORMAT_NAME, FORMAT_VERSION
from streams.settings import Settings

# streams/recordings.py reads what this writes (FORMAT_NAME, FORMAT_VERSION);
# tests/integration/test_record_rehearse.py reads a recording back through it.
INPUT_TOPICS = ("clicks", "carts", "orders")

# A partition that yields nothing for this long while behind its end offset
# (a broker down, a fetch refused) stops the capture with one line.
_STALL_S = 60.0


@dataclass
class RecordResult:
    records: int
    partitions: int
    seconds: float
    path: Path


def entry_line(record: ConsumerRecord, short: str) -> bytes:
    """One record line of the versioned format (docs/recordings.md s1c):
    text when it is UTF-8, base64 when not, so every byte survives."""
    line: dict[str, Any] = {
        "topic": short,
        "partition": record.partition,
        "offset": record.offset,
        "ts": record.timestamp,
    }
    if record.key is not None:
        try:
            line["key"] = record.key.decode("utf-8")
        except UnicodeDecodeError:
            line["key_b64"] = base64.b64encode(record.key).decode("ascii")
    if record.value is None:
        line["raw"] = None
    else:
        try:
            line["raw"] = record.value.decode("utf-8")
        except UnicodeDecodeError:
            line["raw_b64"] = base64.b64encode(record.value).decode("ascii")
    if record.headers:
        line["headers"] = [
            [name, base64.b64encode(value or b"").decode("ascii")]
            for name, value in record.headers
        ]
    return orjson.dumps(line)


async def _offsets(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    since_ms: int | None,
    until_ms: int | None,
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """Where each partition's capture starts and stops (exclusive): its end
    offsets now, cut by the first record at or after --since / --until."""
    starts = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    if since_ms is not None:
        found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        starts = {tp: ends[tp] if at is None else at.offset for tp, at in found.items()}
    if until_ms is not None:
        found = await consumer.offsets_for_times({tp: until_ms for tp in tps})
        ends = {
            tp: ends[tp] if at is None else min(ends[tp], at.offset)
            for tp, at in found.items()
        }
    return starts, ends


def _spool_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as f:
        for line in f:
            ts, _, body = line.partition(b"\t")
            yield int(ts), body


def _write(out: Path, header: dict[str, Any], spools: list[Path]) -> None:
    """Merge the partitions' spools by timestamp into `out` (each partition
    stays in offset order: heapq.merge keeps every input's order), atomically."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw:
            stream: IO[bytes] | gzip.GzipFile = raw
            if out.name.endswith(".gz"):
                # mtime 0 and no name: the same capture gives the same bytes.
                # Level 6, not gzip's 9: first-hour recorded in 3.6 s instead
                # of 11 s, for a file 5% bigger (6.05 MB vs 5.78 MB).
                stream = gzip.GzipFile(
                    fileobj=raw, mode="wb", filename="", mtime=0, compresslevel=6
                )
            with stream:
                stream.write(orjson.dumps(header) + b"\n")
                merged = heapq.merge(*map(_spool_lines, spools), key=lambda x: x[0])
                for _ts, body in merged:
                    stream.write(body)
        tmp.replace(out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


async def record(
    settings: Settings,
    out: str,
    since_ms: int | None = None,
    until_ms: int | None = None,
    progress: bool = True,
) -> RecordResult:
    """Capture clicks, carts and orders of `settings.topic_prefix`, every
    partition, up to the end offsets of now (or --until), into `out`."""
    started = time.monotonic()
    out_path = Path(out)
    if not out_path.parent.is_dir():
        msg = f"cannot write {out}: no such folder {out_path.parent}"
        raise RecordingError(msg)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        request_timeout_ms=30_000,
        **kafka_auth(settings),
    )
    try:
        await consumer.start()
        await consumer._client.force_metadata_update()
        counts = {
            short: len(consumer.partitions_for_topic(settings.topic(short)) or ())
            for short in INPUT_TOPICS
        }
        if not any(counts.values()):
            topics = ", ".join(settings.topic(s) for s in INPUT_TOPICS)
            msg = f"no input topics at {settings.kafka_bootstrap}: {topics}"
            raise RecordingError(msg)
        tps = [
            TopicPartition(settings.topic(short), p)
            for short in INPUT_TOPICS
            for p in range(counts[short])
        ]
        starts, ends = await _offsets(consumer, tps, since_ms, until_ms)
        header = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "topic_prefix": settings.topic_prefix,
            "partitions": counts,
            "since_ms": since_ms,
            "until_ms": until_ms,
            "recorded_at_ms": int(time.time() * 1000),
        }
        with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".rec-") as d:
            spools = {tp: Path(d) / f"{tp.topic}-{tp.partition}" for tp in tps}
            n = await _capture(consumer, starts, ends, spools, progress)
            _write(out_path, header, list(spools.values()))
    except KafkaError as exc:
        msg = f"reading Kafka at {settings.kafka_bootstrap} failed: {exc}"
        raise KafkaUnavailable(msg) from exc
    except OSError as exc:
        msg = f"cannot write {out}: {exc.strerror or exc}"
        raise RecordingError(msg) from exc
    finally:
        await consumer.stop()
    return RecordResult(n, len(tps), time.monotonic() - started, out_path)


async def _capture(
    consumer: AIOKafkaConsumer,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    spools: dict[TopicPartition, Path],
    progress: bool,
) -> int:
    """Fetch every partition from its start to its end into its spool file:
    `<ts>\\t<record line>` per record, in offset order."""
    files = {tp: open(path, "wb") for tp, path in spools.items()}  # noqa: SIM115
    behind = {tp for tp in spools if starts[tp] < ends[tp]}
    total = sum(ends[tp] - starts[tp] for tp in behind)
    bar = tqdm(total=total, unit="rec", unit_scale=True, disable=not progress)
    written = 0
    try:
        if behind:
            consumer.assign(sorted(behind))
            for tp in behind:
                consumer.seek(tp, starts[tp])
        last_progress = time.monotonic()
        while behind:
            batches = await consumer.getmany(*behind, timeout_ms=1000)
            for tp, records in batches.items():
                short = tp.topic.rsplit(".", 1)[-1]
                wanted = [r for r in records if r.offset < ends[tp]]
                files[tp].writelines(
                    b"%d\t%s\n" % (r.timestamp, entry_line(r, short)) for r in wanted
                )
                written += len(wanted)
                bar.update(len(wanted))
            for tp in list(behind):
                # Offsets may skip (compaction, transaction markers): the
                # position, not the count, says when a partition is done.
                if await consumer.position(tp) >= ends[tp]:
                    behind.discard(tp)
                    consumer.pause(tp)
            if batches:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > _STALL_S:
                names = ", ".join(f"{tp.topic}:{tp.partition}" for tp in sorted(behind))
                msg = f"no records from {names} for {_STALL_S:.0f} s before their end"
                raise RecordingError(msg)
            await asyncio.sleep(0)
    finally:
        bar.close()
        for f in files.values():
            f.close()
    return written
