"""Recordings from Kafka on the real broker and Redis: `presale record` keeps
every record as sent, `replay` puts it back byte for byte (kcat's dumps too),
`expect` and `rehearse` agree on a committed recording, and a rehearsal whose
live state is wrong exits 1."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka import ensure_topics
from streams.recordings import iter_entries
from streams.settings import Settings
from tests.integration.helpers import campaign_keys, poll, read_topic, redis_client
from tests.support.services import (
    KAFKA,
    STREAMS,
    Env,
    one_line_error,
    recording_env,
    stop_processes,
)

pytestmark = pytest.mark.integration

SMALL = STREAMS / "small.jsonl.gz"
T0 = 1_760_529_600_000
CLICK = b'{"event_id":"e1","type":"click","ts":%d,"user_id":"u1","brand_id":"b1"}' % (
    T0 + 1_000
)

# (topic, partition, key, value, headers): one of each thing a recording must
# carry exactly. Every value but the first is a dead letter for the worker.
TRICKY: list[tuple[str, int, bytes | None, bytes | None, list[tuple[str, bytes]]]] = [
    ("clicks", 0, b"u1", CLICK, []),
    ("clicks", 1, b"\xff\xfe", b"\xff\x00binary\x80", [("trace", b"\x00\x01\xff")]),
    ("carts", 2, None, b"", []),
    ("orders", 3, b"k", None, []),  # no value at all (a tombstone)
    ("orders", 0, "张三".encode(), '{"type":"order","备注":"日本"}'.encode(), []),
    ("carts", 5, b'q"\\\n\t', b'x\x01\x1f"\\ {not json', []),
    ("clicks", 4, b"big", b'{"pad":"' + b"x" * 70_000 + b'"}', []),  # too_large
    ("orders", 1, None, b'{"event_id":"e2","type":"order","ts":NaN}', []),
    ("clicks", 2, b"\xed\xa0\x80", b"\xed\xa0\x80 an encoded surrogate", []),
    ("carts", 0, b"u3", b"\r\n\r\nlines\n", []),
    ("clicks", 0, b"u1", CLICK, []),  # a duplicate, same partition
]

Capture = dict[tuple[str, int], list[tuple[bytes | None, bytes | None, int, tuple]]]


def by_partition(path: Path) -> Capture:
    """A recording's records per (topic, partition), in order, with key, value,
    Kafka timestamp and headers."""
    out: Capture = defaultdict(list)
    for e in iter_entries(path):
        assert e.partition is not None and e.ts_ms is not None
        out[(e.topic, e.partition)].append((e.key, e.value, e.ts_ms, e.headers))
    return dict(out)


def produce(env: Env, records: list, base_ts_ms: int) -> Capture:
    """Send `records` to the env's topics with explicit partitions and
    timestamps; returns what was sent, in the shape of `by_partition`."""

    async def run() -> None:
        await ensure_topics(Settings.from_env(env.vars, load=False))
        producer = AIOKafkaProducer(bootstrap_servers=KAFKA, max_request_size=4 << 20)
        await producer.start()
        try:
            for i, (short, part, key, value, headers) in enumerate(records):
                await producer.send_and_wait(
                    env.topic(short),
                    value,
                    key=key,
                    partition=part,
                    timestamp_ms=base_ts_ms + 37 * i,
                    headers=headers or None,
                )
        finally:
            await producer.stop()

    asyncio.run(run())
    sent: Capture = defaultdict(list)
    for i, (short, part, key, value, headers) in enumerate(records):
        sent[(short, part)].append((key, value, base_ts_ms + 37 * i, tuple(headers)))
    return dict(sent)


def kcat_dump(env: Env, out: Path) -> None:
    """`kcat -C -J` of the env's three input topics, one after the other."""
    with open(out, "wb") as f:
        for short in ("clicks", "carts", "orders"):
            subprocess.run(
                ["kcat", "-C", "-J", "-b", KAFKA, "-t", env.topic(short), "-e", "-q"],
                stdout=f,
                check=True,
                timeout=120,
            )


def rehearsal_of(stdout: str) -> tuple[str, str]:
    """(topic prefix, campaign id) from rehearse's first line."""
    m = re.search(r"records into (\S+)\.\*, campaign (\S+)", stdout)
    assert m, stdout
    return m.group(1), m.group(2)


def topics_with_prefix(prefix: str) -> list[str]:
    async def run() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
        await admin.start()
        try:
            return [t for t in await admin.list_topics() if t.startswith(prefix)]
        finally:
            await admin.close()

    return asyncio.run(run())


def assert_cleaned_up(stdout: str) -> None:
    prefix, campaign = rehearsal_of(stdout)
    assert topics_with_prefix(prefix + ".") == []
    assert topics_with_prefix(f"presale-{campaign}-") == []
    assert campaign_keys(f"presale:{{{campaign}}}:") == []


def same_but_crossed_at(got: dict, want: dict) -> bool:
    """Equal but for the campaign id (the env's own) and milestones'
    crossed_at_ms: the reference takes it in file order, and a capture orders
    the partitions by Kafka timestamp, which ties at 1 ms (about 8 records a
    ms in a flat-out replay), so a brand's orders from several partitions can
    come in another order than the committed file's."""
    got = {**got, "campaign": {**got["campaign"], "id": want["campaign"]["id"]}}
    for report in (got, want):
        report["milestones"] = [
            {k: v for k, v in m.items() if k != "crossed_at_ms"}
            for m in report["milestones"]
        ]
    return got == want


def test_record_expect_rehearse_round_trip(tmp_path: Path) -> None:
    """`small` replayed to Kafka, then `presale record`: the recording holds
    every record of the 18 partitions with its key, value and timestamp as the
    topics hold them; `presale expect` on it gives exactly the committed
    expected report (but milestones' crossed_at_ms: `same_but_crossed_at`);
    `presale rehearse` exits 0 and leaves no topic and no Redis key of its
    campaign behind (measured: 8-12 s for the 18,794 records)."""
    env = Env(recording_env("small"))
    env.replay(SMALL)
    out = tmp_path / "captured.jsonl.gz"
    printed = env.presale("record", "--quiet", str(out))
    assert "recorded 18,794 records of 18 partitions" in printed

    captured = by_partition(out)
    for short in ("clicks", "carts", "orders"):
        on_topic: Capture = defaultdict(list)
        for r in read_topic(env.topic(short)):
            on_topic[(short, r.partition)].append(
                (r.key, r.value, r.timestamp, tuple(r.headers))
            )
        for tp, records in on_topic.items():
            assert captured[tp] == records, tp

    want = json.loads((STREAMS / "small.expected.json").read_text())
    got = json.loads(env.presale("expect", str(out)))
    assert same_but_crossed_at(got, want)

    started = time.monotonic()
    done = env.run("rehearse", "--quiet", str(out))
    print(f"rehearse of small: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PASS: the live report equals expect's" in done.stdout
    assert "18,794 records" in done.stdout
    assert_cleaned_up(done.stdout)


def test_malformed_and_binary_records_replay_byte_for_byte(tmp_path: Path) -> None:
    """Records that are not UTF-8 (keys and values), empty, without a value,
    70 kB, with headers, in chosen partitions at chosen timestamps: recorded,
    replayed with --keep-timestamps into other topics and recorded again, both
    recordings hold exactly what was sent. `rehearse` of it passes: the worker
    and the reference agree on every dead letter."""
    sent = produce(first := Env(), TRICKY, int(time.time() * 1000) - 60_000)
    a = tmp_path / "a.jsonl.gz"
    first.presale("record", "--quiet", str(a))
    assert by_partition(a) == sent

    second = Env()
    second.presale("replay", "--quiet", "--keep-timestamps", str(a))
    b = tmp_path / "b.jsonl"
    second.presale("record", "--quiet", str(b))
    assert by_partition(b) == sent

    want = json.loads(first.presale("expect", str(a)))
    assert want["totals"]["clicks"] == 1
    assert want["dead_letters"] == len(TRICKY) - 2
    done = first.run("rehearse", "--quiet", str(a))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_cleaned_up(done.stdout)


needs_kcat = pytest.mark.skipif(
    shutil.which("kcat") is None,
    reason="kcat is not installed (apt-get install kcat; deploy/local/tools.sh)",
)


@needs_kcat
def test_kcat_dump_of_binary_records_replays_byte_for_byte(tmp_path: Path) -> None:
    """Debian's kcat writes keys and payloads into its JSON as raw bytes (not
    UTF-8 ones too): its dump of the tricky records replays exactly what was
    sent, partitions, timestamps and headers included."""
    sent = produce(source := Env(), TRICKY, int(time.time() * 1000) - 60_000)
    dump = tmp_path / "dump.jsonl"
    kcat_dump(source, dump)
    target = Env()
    target.presale("replay", "--quiet", "--keep-timestamps", str(dump))
    again = tmp_path / "again.jsonl.gz"
    target.presale("record", "--quiet", str(again))
    assert by_partition(again) == sent


@needs_kcat
def test_kcat_dump_of_a_committed_recording_rehearses(tmp_path: Path) -> None:
    """A kcat dump of `small` on Kafka: `expect` gives the committed expected
    report, and `rehearse` of the dump passes."""
    env = Env(recording_env("small"))
    env.replay(SMALL)
    dump = tmp_path / "small.kcat.jsonl"
    kcat_dump(env, dump)
    assert sum(1 for _ in iter_entries(dump)) == 18_794

    want = json.loads((STREAMS / "small.expected.json").read_text())
    got = json.loads(env.presale("expect", str(dump)))
    assert same_but_crossed_at(got, want)
    done = env.run("rehearse", "--quiet", str(dump))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PASS" in done.stdout
    assert_cleaned_up(done.stdout)


def test_rehearse_fails_when_the_live_state_is_wrong(tmp_path: Path) -> None:
    """A live report that differs from expect's fails the rehearsal: while it
    runs, one dead letter is added by hand to its campaign's Redis state (as a
    bug in the worker would), and rehearse prints the difference, exits 1,
    keeps and names the worker's log, and still cleans up. Five clicks paced
    2 s apart (--speed 1 on their recorded timestamps) leave the time to."""
    header = {"format": "presale-recording", "version": 1}
    lines = [json.dumps(header)]
    for i in range(5):
        raw = json.dumps(
            {"event_id": f"e{i}", "type": "click", "ts": T0 + i, "user_id": "u1"}
            | {"brand_id": "b1"}
        )
        line = {"topic": "clicks", "partition": 0, "ts": 1_000_000 + 2_000 * i}
        lines.append(json.dumps(line | {"key": "u1", "raw": raw}))
    path = tmp_path / "paced.jsonl"
    path.write_text("\n".join(lines) + "\n")

    env = Env()
    rehearsal = env.background("rehearse", "--quiet", "--speed", "1", str(path))
    try:
        prefix = f"presale:{{{env.vars['PRESALE_CAMPAIGN_ID']}-rehearse-"
        applied = poll(
            lambda: campaign_keys(prefix, "*}:off"),
            bool,
            60,
            "the rehearsal's first applied batch",
        )
        client = redis_client()
        try:  # the offsets key is `presale:{campaign}:off`; dead letters `...dl`
            client.hincrby(applied[0][: -len(b"off")] + b"dl", "invalid_json", 1)
        finally:
            client.close()
        out, err = rehearsal.communicate(timeout=300)
    finally:
        stop_processes([rehearsal])
    assert rehearsal.returncode == 1, out[-3000:] + err[-3000:]
    assert "/dead_letters: 1 vs 0" in out
    assert "FAIL: 1 differences from expect" in out
    kept = re.search(r"kept the worker's log and settings in (\S+)", out)
    assert kept, out
    assert (Path(kept.group(1)) / "worker.log").is_file()
    shutil.rmtree(kept.group(1))
    assert_cleaned_up(out)


def test_record_since_until_cuts_by_kafka_timestamp(tmp_path: Path) -> None:
    """--since and --until (epoch ms or ISO 8601 with a zone) keep, in each
    partition, the records from the first at or after --since up to the first
    at or after --until: with timestamps rising 37 ms a record, exactly those
    with since <= ts < until."""
    base = int(time.time() * 1000) - 60_000
    sent = produce(env := Env(), TRICKY, base)
    since, until = base + 37 * 3, base + 37 * 8
    out = tmp_path / "cut.jsonl"
    whole = datetime.fromtimestamp(until // 1000, tz=UTC)
    iso_until = whole.replace(microsecond=until % 1000 * 1000).isoformat()
    env.presale(
        "record", "--quiet", "--since", str(since), "--until", iso_until, str(out)
    )
    want = {
        tp: kept
        for tp, records in sent.items()
        if (kept := [r for r in records if since <= r[2] < until])
    }
    assert by_partition(out) == want
    assert sum(map(len, want.values())) == 5


def test_record_of_a_prefix_without_topics_is_one_line(tmp_path: Path) -> None:
    """A prefix with no input topics (a typo in PRESALE_TOPIC_PREFIX) is an
    error naming the topics looked for, and no file is written."""
    env = Env()
    out = tmp_path / "none.jsonl.gz"
    line = one_line_error(env.run("record", "--quiet", str(out)), "no secret")
    assert env.topic("clicks") in line
    assert list(tmp_path.iterdir()) == []
