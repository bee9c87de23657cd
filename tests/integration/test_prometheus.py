"""A real Prometheus server (Debian's `prometheus`) scrapes a real worker that
applied the `small` recording, with the rules of deploy/prometheus/rules.yml
loaded, and is queried through its HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_ops_files import dashboard_exprs
from tests.integration.helpers import poll, reset_after, settled_report
from tests.support.services import (
    ROOT,
    STREAMS,
    Env,
    Worker,
    free_port,
    recording_env,
    stop_processes,
)

pytestmark = pytest.mark.integration

N_RECORDS = 18_794
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> Any:
        url = self.base + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.get("/api/v1/query", query=expr)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The value of a query that returns one series, None when it has none."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


@contextmanager
def prometheus(tmp: Path, targets: list[str]) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: run `bash deploy/local/tools.sh`")
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {"job_name": "presale", "static_configs": [{"targets": targets}]}
                ],
            }
        )
    )
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Prometheus(port)

    def ready() -> bool:
        if proc.poll() is not None:
            tail = (tmp / "prometheus.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"prometheus exited {proc.returncode}: {tail}")
        try:
            with urllib.request.urlopen(server.base + "/-/ready", timeout=5) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        poll(ready, bool, 60, "prometheus ready")
        yield server
    finally:
        stop_processes([proc])
        log.close()


def test_prometheus_scrapes_the_worker(tmp_path: Path) -> None:
    """Prometheus sees up == 1, presale_records_in_total summing to the 18,794
    records replayed, batch sizes summing to the same, the report's gross GMV
    and milestone count; all 7 alert rules evaluate without error; every
    dashboard query is valid PromQL that returns data, but those of events
    the recording lacks (surge alerts, retries, stale batches, offset gaps);
    after the worker stops, up turns 0 and PresaleWorkerDown is pending."""
    env = Env(recording_env("small"))
    with reset_after(env):
        worker = Worker(env, "prom").start()
        try:
            env.replay(STREAMS / "small.jsonl.gz")
            report = settled_report(env, N_RECORDS, [worker])
            with prometheus(tmp_path, [f"127.0.0.1:{worker.metrics_port}"]) as prom:
                check_scraped(prom, report)
                worker.stop()
                poll(
                    lambda: prom.value('up{job="presale"}'),
                    lambda v: v == 0,
                    30,
                    "up 0 after the worker stopped",
                )
                alerts = poll(
                    lambda: prom.get("/api/v1/alerts")["data"]["alerts"],
                    lambda a: any(
                        x["labels"]["alertname"] == "PresaleWorkerDown" for x in a
                    ),
                    30,
                    "PresaleWorkerDown pending",
                )
                down = [
                    a for a in alerts if a["labels"]["alertname"] == "PresaleWorkerDown"
                ]
                assert down[0]["state"] in {"pending", "firing"}
        finally:
            worker.stop()


def check_scraped(prom: Prometheus, report: dict[str, Any]) -> None:
    records_in = 'sum(presale_records_in_total{job="presale"})'
    poll(lambda: prom.value(records_in), lambda v: v == N_RECORDS, 60, records_in)
    assert prom.value('up{job="presale"}') == 1
    assert prom.value('sum(presale_batch_records_sum{job="presale"})') == N_RECORDS
    assert prom.value('sum(presale_milestones_total{job="presale"})') == len(
        report["milestones"]
    )
    gross = 'presale_gmv_fen{job="presale", kind="gross"}'
    want_gross = report["totals"]["gross_gmv_fen"]
    poll(lambda: prom.value(gross), lambda v: v == want_gross, 30, gross)
    lag = 'sum(presale_consumer_lag_records{job="presale"})'
    assert prom.value(lag) == 0
    top1 = 'presale_top_brand_gross_gmv_fen{job="presale", rank="1"}'
    assert prom.value(top1) == report["brands"][0]["gross_gmv_fen"]

    def evaluated(groups: list[dict[str, Any]]) -> bool:
        rules = [r for g in groups for r in g["rules"]]
        return len(rules) == 7 and all(
            r["health"] == "ok" and r.get("lastEvaluation", "").startswith("2")
            for r in rules
        )

    poll(
        lambda: prom.get("/api/v1/rules")["data"]["groups"],
        evaluated,
        30,
        "all 7 rules evaluated with health ok",
    )

    empty_expected = (
        "presale_alerts_total",
        "retries_total",
        "stale_batches_total",
        "offset_gaps_total",
    )
    for title, expr in dashboard_exprs():
        promql = expr.replace("$__rate_interval", "1m")
        if any(name in expr for name in empty_expected):
            prom.query(promql)  # valid, whatever it returns
        else:  # a rate needs two scrapes in its window: poll
            poll(lambda q=promql: prom.query(q), bool, 30, f"{title!r}: {promql}")
