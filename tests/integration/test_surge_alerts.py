"""Surge alerts end to end: the generated surge stream (seeds/surges.py), replayed
through real Kafka into a real worker and Redis.

Two independent checks:
- against the injected ground truth (`surge.truth.json`): every surge that
  should fire is alerted within 2 event-minutes of its onset, the spike and the
  slow growth are not, and no quiet scope alerts;
- against a batch run: traffic counted here from the raw JSON lines (plain
  dicts, no stream code), judged minute by minute by the pure detector, gives
  exactly the alerts the worker raised, on the Redis stream, in the report, on
  `presale.alerts` (each once) and in `presale_alerts_total`.
"""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from processors.surge import SurgeRules, detect
from tests.integration.helpers import read_topic
from tests.support.services import REDIS, STREAMS, Env, workers

pytestmark = pytest.mark.integration

SURGE = STREAMS / "surge"
MINUTE_MS = 60_000


def batch_traffic(start_ms: int, end_ms: int) -> dict[int, dict[tuple[str, str], int]]:
    """Per minute and scope, the clicks, carts and orders of the stream."""
    counts: dict[int, Counter[tuple[str, str]]] = {}
    with gzip.open(SURGE / "surge.jsonl.gz", "rt", encoding="utf-8") as lines:
        for line in lines:
            e = json.loads(line)
            if e["type"] == "cancel" or not start_ms <= e["ts"] < end_ms:
                continue
            channel = e.get("channel", "other")
            minute = e["ts"] // MINUTE_MS * MINUTE_MS
            c = counts.setdefault(minute, Counter())
            c["brand", e["brand_id"]] += 1
            c["channel", channel] += 1
            if channel == "livestream":
                c["room", e["room_id"]] += 1
            if e["type"] == "order" and channel == "flash_sale":
                c["flash_sale_orders", e["brand_id"]] += 1
    return {m: dict(c) for m, c in counts.items()}


def poll(what: str, probe: Any, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_surge_stream_alerts_match_truth_and_batch_run() -> None:
    truth = json.loads((SURGE / "surge.truth.json").read_text())
    settings = json.loads((SURGE / "surge.settings.json").read_text())
    env = Env({**settings, "PRESALE_SURGE_LATENESS_MS": "5000"})
    start_ms, end_ms = truth["start_ms"], truth["end_ms"]
    # The last minute the truth needs judged: the latest onset + 2 minutes.
    needed = max(i["onset_ms"] for i in truth["injections"]) + 2 * MINUTE_MS
    client = redis.Redis.from_url(REDIS)
    meta = f"presale:{{{env.vars['PRESALE_CAMPAIGN_ID']}}}:meta"
    with workers(env, 1) as running:
        env.replay(SURGE / "surge.jsonl.gz")
        env.wait_applied(alive=running)
        through = int(
            poll(
                "the judge to reach the last injection",
                lambda: (
                    int(client.hget(meta, "surge_through") or 0) >= needed
                    and client.hget(meta, "surge_through")
                ),
            )
        )
        report = env.report()
        alerts = report["alerts"]
        topic = poll(
            "every alert on presale.alerts",
            lambda: (
                len(recs := read_topic(env.topic("alerts"))) >= len(alerts) and recs
            ),
        )
        metrics = running[0].get("/metrics", port=running[0].metrics_port).decode()

    # 1. The injected truth.
    raised = {(a["scope"], a["key"]): a for a in alerts}
    affected = {tuple(s) for i in truth["injections"] for s in i["affected"]}
    for inj in truth["injections"]:
        scope = (inj["scope"], inj["key"])
        if inj["should_fire"]:
            assert scope in raised, f"{inj['kind']} surge of {scope} not alerted"
            delay = (raised[scope]["minute_ms"] - inj["onset_ms"]) // MINUTE_MS
            assert 0 <= delay <= 2, f"{scope} alerted {delay} minutes after onset"
        else:
            assert scope not in raised, f"{inj['kind']} of {scope} alerted"
    injected = {(i["scope"], i["key"]) for i in truth["injections"] if i["should_fire"]}
    quiet = set(raised) - injected - affected
    assert not quiet, f"quiet scopes alerted: {sorted(quiet)}"

    # 2. The batch run over independently counted traffic, up to the judged minute.
    counts = batch_traffic(start_ms, end_ms)
    judged = {m: c for m, c in counts.items() if m <= through}
    want = detect(judged, SurgeRules(), start_ms)
    key = ("scope", "key", "minute_ms", "observed", "severity")
    assert [tuple(a[k] for k in key) for a in alerts] == [
        (c.scope, c.key, c.minute_ms, c.observed, c.severity) for c in want
    ]
    for a in alerts:
        assert a["alert_id"] == f"{a['scope']}:{a['key']}:{a['minute_ms']}"
        assert a["ratio"] >= 1.4
        assert a["severity"] == ("critical" if a["ratio"] >= 2.0 else "warning")

    # 3. The topic (each alert exactly once, keyed by its scope key) and Prometheus.
    on_topic = [json.loads(r.value) for r in topic]
    assert sorted(a["alert_id"] for a in on_topic) == sorted(
        a["alert_id"] for a in alerts
    )
    assert all(r.key.decode() == json.loads(r.value)["key"] for r in topic)
    by_label: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(metrics):
        if family.name == "presale_alerts":
            for s in family.samples:
                if s.name == "presale_alerts_total":
                    by_label[s.labels["scope"], s.labels["severity"]] += int(s.value)
    assert by_label == Counter((a["scope"], a["severity"]) for a in alerts)
