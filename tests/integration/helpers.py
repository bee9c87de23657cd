"""Shared helpers of the integration tests: report diffs, topic reads, key counts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from streams.check import check, milestone_set
from tests.support.services import KAFKA, REDIS, STREAMS, Env, Worker
from tests.support.topics import read_all

# CONTRACT section 3: buyers may be approximate (HyperLogLog), under 2% error.
BUYERS_TOLERANCE = 0.02

T = TypeVar("T")


def buyers_close(approx: int, exact: int) -> bool:
    return abs(approx - exact) <= max(1, BUYERS_TOLERANCE * exact)


def report_diff(live: Any, want: Any, path: str = "") -> list[str]:
    """Every place two reports differ; `buyers` within 2% (or 1), all else exact,
    both ways (a key only one side has is a difference)."""
    out: list[str] = []
    if isinstance(live, dict) and isinstance(want, dict):
        for key in sorted(set(live) | set(want)):
            where = f"{path}/{key}"
            if key not in live or key not in want:
                side = "live" if key in live else "want"
                out.append(f"{where}: only in {side}")
            elif key == "buyers":
                if not buyers_close(live[key], want[key]):
                    out.append(f"{where}: {live[key]} vs {want[key]}")
            else:
                out.extend(report_diff(live[key], want[key], where))
    elif isinstance(live, list) and isinstance(want, list):
        if len(live) != len(want):
            out.append(f"{path}: {len(live)} items vs {len(want)}")
        for i, (a, b) in enumerate(zip(live, want, strict=False)):
            out.extend(report_diff(a, b, f"{path}[{i}]"))
    elif live != want or type(live) is not type(want):
        out.append(f"{path}: {live!r} vs {want!r}"[:300])
    return out


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(REDIS)


def campaign_keys(prefix: str, pattern: str = "*") -> list[bytes]:
    """Every Redis key under `prefix` (a campaign's `presale:{id}:`)."""
    escaped = prefix.replace("{", "\\{").replace("}", "\\}")
    client = redis_client()
    try:
        return list(client.scan_iter(match=escaped + pattern, count=1000))
    finally:
        client.close()


def read_topic(topic: str, timeout_s: float = 30) -> list[ConsumerRecord]:
    """Every record of `topic` from its beginning to its current end offsets."""

    async def run() -> list[ConsumerRecord]:
        # Read committed: a fenced outbox publisher's records are aborted.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=KAFKA,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            if not tps:
                return []
            ends = await consumer.end_offsets(tps)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            records: list[ConsumerRecord] = []
            deadline = time.monotonic() + timeout_s
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                if time.monotonic() > deadline:
                    msg = f"could not read {topic} to its end in {timeout_s} s"
                    raise AssertionError(msg)
                batch = await consumer.getmany(timeout_ms=500)
                for recs in batch.values():
                    records.extend(recs)
            return records
        finally:
            await consumer.stop()

    return asyncio.run(run())


def poll(
    fetch: Callable[[], T], done: Callable[[T], bool], timeout_s: float, what: str
) -> T:
    """Call `fetch` until `done(value)`; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            msg = f"{what} not reached in {timeout_s} s; last: {value!r}"[:2000]
            raise AssertionError(msg)
        time.sleep(0.3)


def settled_report(
    env: Env, expect_min: int, alive: list[Worker], timeout_s: float = 120
) -> dict[str, Any]:
    """The report once every published record is applied.

    `presale report` reads the counters before it measures consumer_lag, so a
    report can say lag 0 and still miss the last batch (streams/cli.py `_report`).
    A report read after one that said lag 0 is complete: read it again.
    """
    env.wait_applied(timeout=timeout_s, expect_min=expect_min, alive=alive)
    report = env.report()
    assert report["consumer_lag"] == 0
    return report


@contextmanager
def reset_after(env: Env) -> Iterator[Env]:
    """Delete the campaign's Redis state when the block ends (its workers stopped:
    a running one would write its outbox lease again)."""
    try:
        yield env
    finally:
        env.presale("reset", check=False)


# How long the milestones may take to reach their topic after the report is exact.
OUTBOX_WAIT_S = 150


def expected_report(name: str, replays: int = 1) -> dict[str, Any]:
    """The reference's report of recording `name`; a stream published `replays`
    times has its rejected and out-of-window records that many times (they are
    records, not facts: only facts are deduplicated)."""
    want = json.loads((STREAMS / f"{name}.expected.json").read_text())
    want["dead_letters"] *= replays
    want["out_of_window"] *= replays
    want["dead_letters_by_reason"] = {
        k: v * replays for k, v in want["dead_letters_by_reason"].items()
    }
    return want


def assert_exact(
    env: Env, alive: list[Worker], name: str, replays: int = 1
) -> dict[str, Any]:
    """The report equals the reference's for recording `name`, and every
    milestone is on the milestones topic exactly once."""
    live = env.wait_applied(timeout=240, alive=alive)
    problems = check(live, expected_report(name, replays))
    assert problems == [], problems[:12]
    # The outbox may still be publishing the last milestones: give it a moment.
    # After a broker restart that can be a minute: the broker loads every
    # partition of the run's earlier tests before it leads the milestones
    # topic again, and the producer meanwhile hears NotEnoughReplicas.
    deadline = time.monotonic() + OUTBOX_WAIT_S
    while True:
        records = read_all(env.topic("milestones"))
        ids = Counter(dict(r.headers)["presale-id"].decode() for r in records)
        on_topic = {
            (m["kind"], m["brand_id"], m["threshold_fen"])
            for m in (json.loads(r.value) for r in records)
        }
        if on_topic == milestone_set(live) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert on_topic == milestone_set(live)
    assert max(ids.values()) == 1, "a milestone was published twice"
    assert len(records) == len(live["milestones"])
    return live


def finish(replay: subprocess.Popen[str], timeout: float = 120) -> None:
    """Wait for a background replay; it must have succeeded."""
    try:
        _out, err = replay.communicate(timeout=timeout)
    finally:
        replay.kill()
    assert replay.returncode == 0, err[-2000:]
