"""Bad input at volume: 100,000 malformed records interleaved with a valid stream."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import orjson
import pytest

from seeds.reference import expected_report
from streams.check import check
from tests.support.badcorpus import write_mixed
from tests.support.services import STREAMS, Env, Worker, recording_env
from tests.support.topics import read_all

pytestmark = pytest.mark.integration

N_BAD = int(os.environ.get("PRESALE_FUZZ_RECORDS", "100000"))


def test_hundred_thousand_bad_records(tmp_path: Path) -> None:
    """N_BAD malformed records of 11 kinds (plus two near Kafka's 1 MB limit)
    interleaved with the `small` recording: the worker never dies, the report
    equals the batch reference's on the mixed file (so every valid record is
    counted), and every rejected record is on the dead-letter topic once per
    (topic, partition, offset), with the reason the reference gives."""
    mixed = tmp_path / "mixed.jsonl.gz"
    n = write_mixed(STREAMS / "small.jsonl.gz", mixed, N_BAD, seed=11)
    settings = recording_env("small")
    want = expected_report(mixed, settings)
    # The corpus must really be bad: the reference rejects every added record.
    small = expected_report(STREAMS / "small.jsonl.gz", recording_env("small"))
    assert want["dead_letters"] == small["dead_letters"] + n

    env = Env(settings)
    worker = Worker(env, "fuzz").start()
    try:
        env.replay(mixed)
        live = env.wait_applied(timeout=300, alive=[worker])
        assert check(live, want) == []
    finally:
        worker.stop()

    letters = read_all(env.topic("deadletter"))
    seen = {}
    for r in letters:
        d = orjson.loads(r.value)
        assert {"reason", "detail", "topic", "partition", "offset"} <= set(d)
        assert ("raw" in d) != ("raw_b64" in d)
        seen[d["topic"], d["partition"], d["offset"]] = d["reason"]
    assert len(seen) == want["dead_letters"]
    assert Counter(seen.values()) == Counter(want["dead_letters_by_reason"])
