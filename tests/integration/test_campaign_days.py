"""A campaign of days through the real Kafka and Redis (issue 13, section 1 and
hole g): the first hour published again on day 3, a clock far ahead early on,
and workers that disagree on the campaign's rules.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from seeds.reference import expected_report
from streams.check import check, milestone_set
from streams.recordings import iter_records
from tests.support.services import (
    STREAMS,
    Env,
    Worker,
    one_line_error,
    recording_env,
    workers,
)
from tests.support.topics import read_all

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


def _line(topic: str, value: bytes) -> str:
    """A recording line with the record's bytes as they were (binary safe)."""
    return json.dumps({"topic": topic, "raw_b64": base64.b64encode(value).decode()})


def _click(event_id: str, ts_ms: int, brand: str = "filler") -> str:
    event = {
        "event_id": event_id,
        "type": "click",
        "ts": ts_ms,
        "user_id": "u-filler",
        "brand_id": brand,
    }
    return _line("clicks", json.dumps(event).encode())


def _write(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return path


def test_first_hour_republished_on_day_3_is_exact(tmp_path: Path) -> None:
    """A 5-day campaign: the small recording's first hour, with one click
    stamped on the campaign's last day among its first records (a clock ahead);
    a day of clicks; then, day 3, 200 clicks in 4 replays and the whole first
    hour published again. The live report equals the independent reference's
    for the concatenated stream: no order, cancel or milestone twice, the
    republished clicks and carts late (9,713 late; 253 milestones, each on the
    topic once), and the totals those of the stream without the republished
    hour."""
    settings = recording_env("small")
    start_ms = int(settings["PRESALE_CAMPAIGN_START_MS"])
    end_ms = start_ms + 5 * DAY_MS
    settings["PRESALE_CAMPAIGN_END_MS"] = str(end_ms)
    recorded = [
        _line(topic, value)
        for topic, _key, value in iter_records(STREAMS / "small.jsonl.gz")
    ]
    first_hour = []
    for topic, _key, value in iter_records(STREAMS / "small.jsonl.gz"):
        try:
            ts = json.loads(value).get("ts")
        except (ValueError, AttributeError):
            ts = None
        if not isinstance(ts, int) or ts < start_ms + HOUR_MS:
            first_hour.append(_line(topic, value))  # malformed ones too
    phases = [
        [*recorded[:50], _click("ahead", end_ms - 1), *recorded[50:]],
        [_click(f"d1-{i}", start_ms + DAY_MS + i * 1_000) for i in range(300)],
        *(
            [
                _click(f"d3-{b}-{i}", start_ms + 3 * DAY_MS + b * 60_000)
                for i in range(50)
            ]
            for b in range(4)
        ),
        first_hour,
    ]
    files = [_write(tmp_path / f"phase{i}.jsonl.gz", p) for i, p in enumerate(phases)]
    whole = _write(tmp_path / "whole.jsonl.gz", [line for p in phases for line in p])
    want = expected_report(whole, settings, settings_dir=STREAMS)
    without = _write(
        tmp_path / "without.jsonl.gz", [line for p in phases[:-1] for line in p]
    )
    once = expected_report(without, settings, settings_dir=STREAMS)
    assert (want["totals"], want["milestones"]) == (once["totals"], once["milestones"])
    assert (want["late"], once["late"]) == (9_713, 0)

    env = Env(settings)
    with workers(env, 1) as running:
        for path in files:  # each phase applied before the next is published
            env.replay(path)
            live = env.wait_applied(alive=running)
    assert check(live, want) == []
    assert live["late"] == want["late"]
    deadline = time.monotonic() + 30  # the outbox publishes the last ones
    while True:
        records = read_all(env.topic("milestones"))
        if len(records) >= len(want["milestones"]) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    ids = Counter(dict(r.headers)["presale-id"].decode() for r in records)
    assert len(records) == len(want["milestones"]) == len(milestone_set(live))
    assert max(ids.values()) == 1


@pytest.mark.parametrize(
    ("variable", "other"),
    [
        ("PRESALE_DEDUPE_SHARDS", "512"),
        ("PRESALE_CAMPAIGN_START_MS", "1760529600001"),
        ("PRESALE_MILESTONES_FEN", "30000"),
    ],
)
def test_a_worker_with_other_rules_refuses_to_start(variable: str, other: str) -> None:
    """Hole g: the campaign's rules are pinned in Redis at its first start; a
    worker started with another shard count, T0 or thresholds exits with one
    readable line naming the setting, and counts nothing."""
    env = Env(recording_env("small"))
    Worker(env, "first").start().stop()
    Worker(env, "same rules").start().stop()  # the same rules: it starts
    env.vars[variable] = other
    refused = env.run("worker", timeout=120)
    line = one_line_error(refused, secret="\x00")
    assert variable in line
    assert "was started with" in line
