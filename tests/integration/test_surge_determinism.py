"""Alerts are a function of the stream (issue 13, section 3): the surge
recording gives the same alerts however it is batched, how many workers read
it, and whether one of them is killed mid-replay.

Three runs of `seeds/streams/surge/surge.jsonl.gz` (39,393 records, 30
event-minutes, 6 partitions a topic):
- preloaded: the whole stream published first, then 1 worker reads it in
  batches of at most 500 records (so partitions are applied far apart);
- 3 workers reading while the stream is published at full speed;
- the same with one of the 3 killed (SIGKILL) a second into the replay; its
  partitions wait for the group to hand them to the others.
Each run's alerts (alert_id, scope, key, minute_ms, observed, baseline,
severity; raised_at_ms is wall clock) must equal those of the pure detector
over traffic counted independently from the raw lines by the batch reference,
for every minute the run judged, and the three runs must agree on the
minutes all of them judged, which cover every injected surge.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest
import redis

from processors.surge import SurgeRules, detect
from seeds import reference
from seeds.recording import iter_records
from tests.integration.helpers import poll
from tests.support.services import REDIS, STREAMS, Env, Worker

pytestmark = pytest.mark.integration

SURGE = STREAMS / "surge"
FILE = SURGE / "surge.jsonl.gz"
MINUTE_MS = 60_000
FIELDS = ("alert_id", "scope", "key", "minute_ms", "observed", "baseline", "severity")
Alert = tuple[Any, ...]


def reference_traffic(
    start_ms: int, end_ms: int
) -> dict[int, dict[tuple[str, str], int]]:
    """Per minute and scope, the valid clicks, carts and orders of the file,
    validated by the independent batch reference (seeds/reference.py)."""
    counts: dict[int, Counter[tuple[str, str]]] = {}
    for topic, _key, value in iter_records(FILE):
        e = reference.validate(topic, value, reference.DEFAULT_MAX_RECORD_BYTES)
        if isinstance(e, str) or e.type == "cancel":
            continue
        if not start_ms <= e.ts_ms < end_ms:
            continue
        c = counts.setdefault(e.ts_ms // MINUTE_MS * MINUTE_MS, Counter())
        c["brand", e.brand_id] += 1
        c["channel", e.channel] += 1
        if e.channel == "livestream" and e.room_id is not None:
            c["room", e.room_id] += 1
        if e.type == "order" and e.channel == "flash_sale":
            c["flash_sale_orders", e.brand_id] += 1
    return {m: dict(c) for m, c in counts.items()}


def alert_set(alerts: list[dict[str, Any]], through: int) -> set[Alert]:
    return {tuple(a[f] for f in FIELDS) for a in alerts if a["minute_ms"] <= through}


def judged(env: Env, needed: int) -> int:
    """The last minute judged, once it reaches `needed`."""
    client = redis.Redis.from_url(REDIS)
    meta = f"presale:{{{env.vars['PRESALE_CAMPAIGN_ID']}}}:meta"
    try:
        return int(
            poll(
                lambda: int(client.hget(meta, "surge_through") or 0),
                lambda through: through >= needed,
                180,
                "the judge to reach the last injection",
            )
        )
    finally:
        client.close()


def run(
    settings: dict[str, str], workers: int, kill: bool, needed: int
) -> tuple[set[Alert], int]:
    env = Env(settings)
    preloaded = workers == 1
    if preloaded:
        env.replay(FILE)
    pool = [Worker(env, f"w{i}").start() for i in range(workers)]
    try:
        if not preloaded:
            replay = env.background("replay", "--quiet", str(FILE))
            if kill:
                time.sleep(1.0)
                pool[0].kill()
            _out, err = replay.communicate(timeout=180)
            assert replay.returncode == 0, err[-2000:]
        alive = [w for w in pool if w.proc and w.proc.poll() is None]
        env.wait_applied(timeout=240, alive=alive)
        through = judged(env, needed)
        report = env.report()
    finally:
        for w in pool:
            w.stop()
        env.presale("reset", check=False)
    return alert_set(report["alerts"], through), through


def test_the_same_alerts_with_1_or_3_workers_and_a_kill() -> None:
    """Fails before: the surge clock counted only partitions already applied,
    took each one's latest event time, and dropped a partition quiet for 60 s
    of wall clock, so the preloaded run judged minutes from the first
    partitions' traffic alone and missed every injected surge."""
    truth = json.loads((SURGE / "surge.truth.json").read_text())
    start_ms, end_ms = truth["start_ms"], truth["end_ms"]
    needed = max(i["onset_ms"] for i in truth["injections"]) + 2 * MINUTE_MS
    settings = {
        **json.loads((SURGE / "surge.settings.json").read_text()),
        "PRESALE_SURGE_LATENESS_MS": "5000",
        "PRESALE_BATCH_MAX_RECORDS": "500",
    }
    counts = reference_traffic(start_ms, end_ms)
    runs = {
        "1 worker, preloaded": run(settings, 1, False, needed),
        "3 workers": run(settings, 3, False, needed),
        "3 workers, one killed": run(settings, 3, True, needed),
    }
    common = min(through for _alerts, through in runs.values())
    for name, (alerts, through) in runs.items():
        want = detect(
            {m: c for m, c in counts.items() if m <= through}, SurgeRules(), start_ms
        )
        assert alerts == alert_set(
            [
                {
                    "alert_id": f"{c.scope}:{c.key}:{c.minute_ms}",
                    "scope": c.scope,
                    "key": c.key,
                    "minute_ms": c.minute_ms,
                    "observed": c.observed,
                    "baseline": round(c.baseline, 3),
                    "severity": c.severity,
                }
                for c in want
            ],
            through,
        ), name
        minute = (through - start_ms) // MINUTE_MS
        print(f"{name}: {len(alerts)} alerts through minute {minute}")
    first = next(iter(runs.values()))[0]
    for name, (alerts, _through) in runs.items():
        assert {a for a in alerts if a[3] <= common} == {
            a for a in first if a[3] <= common
        }, name
    assert len({a for a in first if a[3] <= common}) >= 4  # the 4 surges at least
