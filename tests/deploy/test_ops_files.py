"""The ops files of deploy/ are valid and name only what the worker exports:
the Prometheus rules and config pass `promtool check`, the rules pass their own
`promtool test rules` cases, and every query of the Grafana dashboard and of the
rules names a metric of `Metrics.create()`'s registry. Needs promtool
(deploy/local/tools.sh), no Kafka or Redis."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "presale.json"
# A metric name right before its label matchers: `name{...}` (every query here
# selects job="presale").
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")
# Series Prometheus adds to every target itself.
SCRAPE_SERIES = {"up"}


def promtool(*args: str) -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: run `bash deploy/local/tools.sh`")
    done = subprocess.run(
        [tool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def exported_names() -> set[str]:
    """Every sample name the worker's registry can expose."""
    names: set[str] = set()
    for family in Metrics.create().registry.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
            names.add(family.name + "_created")
        else:
            names.add(family.name)
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def rule_exprs() -> list[tuple[str, str]]:
    rules: dict[str, Any] = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    return [
        (rule["alert"], rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def test_promtool_checks_rules_and_config() -> None:
    """`promtool check rules` and `check config` (which loads the rules too)."""
    assert "SUCCESS: 7 rules found" in promtool("check", "rules", "rules.yml")
    promtool("check", "config", "prometheus.yml")


def test_promtool_rule_unit_tests() -> None:
    """Each alert fires on its case and stays quiet just below (rules.test.yml)."""
    promtool("test", "rules", "rules.test.yml")


def test_required_alerts_exist() -> None:
    alerts = {name for name, _ in rule_exprs()}
    want = {
        "PresaleWorkerDown",
        "PresaleConsumerLagHigh",
        "PresaleStale",
        "PresaleDeadLetterRate",
        "PresaleTooManyIds",  # issue 16: brands or rooms past their setting
    }
    assert want <= alerts


@pytest.mark.parametrize(
    ("where", "exprs"),
    [("dashboard", dashboard_exprs()), ("rules", rule_exprs())],
)
def test_every_query_names_an_exported_metric(
    where: str, exprs: list[tuple[str, str]]
) -> None:
    exported = exported_names() | SCRAPE_SERIES
    assert exprs, f"no queries in the {where}"
    for title, expr in exprs:
        names = set(SELECTOR.findall(expr))
        assert names, f"{where} {title!r}: no metric selector in {expr!r}"
        unknown = names - exported
        assert not unknown, f"{where} {title!r} names {unknown}, not exported"


def test_dashboard_covers_the_ops_view() -> None:
    """GMV race, top brands, milestones, alerts, lag, freshness, throughput."""
    queried = " ".join(expr for _, expr in dashboard_exprs())
    for metric in (
        "presale_gmv_fen",
        "presale_top_brand_gross_gmv_fen",
        "presale_milestones_total",
        "presale_first_hour_brands_reached",
        "presale_alerts_total",
        "presale_consumer_lag_records",
        "presale_freshness_seconds",
        "presale_records_in_total",
    ):
        assert metric + "{" in queried, metric
    board = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_ops_view_lists_every_metric() -> None:
    """docs/ops-view.md, where the metrics table moved from the README, names
    every metric the worker exports."""
    page = (ROOT / "docs" / "ops-view.md").read_text()
    for family in Metrics.create().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}" in page, name
