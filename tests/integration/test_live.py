"""The live view on a worker that applied the `small` recording (18,794
records): GET /api/live agrees with the full report, reads the alerts stream
newest first, is cheaper than GET /report; the web page and its API answer GET
only; `presale top --once` prints the same view; and the page, in headless
Chromium, shows the brands and updates itself when new events arrive."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.live import alerts_key
from tests.integration.helpers import (
    poll,
    redis_client,
    reset_after,
    settled_report,
)
from tests.support.services import ROOT, STREAMS, Env, Worker, recording_env

pytestmark = pytest.mark.integration

FILE = STREAMS / "small.jsonl.gz"
N_RECORDS = 18_794
T0 = 1_760_529_600_000  # the small recording's campaign start
SCREENSHOT = ROOT / "var" / "live-page.png"
BRAND_FIELDS = (
    "brand_id",
    "gross_gmv_fen",
    "net_gmv_fen",
    "first_hour_gross_gmv_fen",
    "orders",
    "clicks",
    "carts",
    "baseline_first_hour_gmv_fen",
)


class Live:
    def __init__(self, env: Env, worker: Worker, report: dict[str, Any]) -> None:
        self.env = env
        self.worker = worker
        self.report = report

    def api(self, query: str = "") -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.worker.get("/api/live" + query))
        return body


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    env = Env(recording_env("small"))
    with reset_after(env):
        worker = Worker(env, "live").start()
        try:
            env.replay(FILE)
            report = settled_report(env, N_RECORDS, [worker])
            yield Live(env, worker, report)
        finally:
            worker.stop()


def alert(i: int, severity: str = "warning") -> dict[str, Any]:
    return {
        "alert_id": f"room:r{i}:{T0 + i * 60_000}",
        "scope": "room",
        "key": f"r{i}",
        "minute_ms": T0 + i * 60_000,
        "observed": 100 + i,
        "baseline": 50.0,
        "ratio": (100 + i) / 50.0,
        "severity": severity,
        "raised_at_ms": T0 + i * 60_000 + 61_000,
    }


def xadd_alert(env: Env, body: dict[str, Any] | bytes) -> None:
    client = redis_client()
    try:
        value = body if isinstance(body, bytes) else json.dumps(body).encode()
        key = alerts_key(f"presale:{{{env.vars['PRESALE_CAMPAIGN_ID']}}}:")
        client.xadd(key, {"value": value})
    finally:
        client.close()


def test_api_agrees_with_the_report(live: Live) -> None:
    """Totals, first-hour summary, the top 20 brands, the milestone count and
    the newest milestones are those of the full report."""
    view = live.api()
    report = live.report
    assert view["campaign"] == report["campaign"]
    for name, value in view["totals"].items():
        assert value == report["totals"][name], name
    assert view["first_hour"] == report["first_hour"]
    assert view["brand_count"] == len(report["brands"]) == 200
    want = [{f: b[f] for f in BRAND_FIELDS} for b in report["brands"][:20]]
    assert [{f: b[f] for f in BRAND_FIELDS} for b in view["brands"]] == want
    assert [b["rank"] for b in view["brands"]] == list(range(1, 21))
    assert view["milestone_count"] == len(report["milestones"]) == 253
    newest = sorted(
        report["milestones"],
        key=lambda m: (
            m["crossed_at_ms"],
            m["kind"],
            m["brand_id"],
            m["threshold_fen"],
        ),
        reverse=True,
    )[:20]
    assert view["milestones"] == newest
    assert view["dead_letters"] == report["dead_letters"] == 94
    assert view["watermark_ms"] == report["watermark_ms"]
    # The worker measures its own lag every 2 s.
    lagged = poll(live.api, lambda v: v["consumer_lag"] is not None, 15, "lag")
    assert lagged["consumer_lag"] == 0
    assert [b["brand_id"] for b in live.api("?top=3")["brands"]] == [
        b["brand_id"] for b in report["brands"][:3]
    ]


def test_api_reads_alerts_newest_first(live: Live) -> None:
    """Entries XADDed to `<prefix>alerts` come back newest first; an entry
    whose value is not a JSON object is skipped, not fatal."""
    for i in range(3):
        xadd_alert(live.env, alert(i))
    xadd_alert(live.env, b"not json")
    xadd_alert(live.env, alert(3, "critical"))
    deadline = time.monotonic() + 10  # the worker caches a read for 0.5 s
    while True:
        view = live.api()
        if view["alert_count"] >= 5 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert view["alert_count"] == 5
    assert [a["alert_id"] for a in view["alerts"][:4]] == [
        alert(i)["alert_id"] for i in (3, 2, 1, 0)
    ]
    assert view["alerts"][0] == alert(3, "critical")


@pytest.mark.parametrize("path", ["/", "/api/live", "/report"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_web_is_read_only(live: Live, path: str, method: str) -> None:
    url = f"http://127.0.0.1:{live.worker.web_port}{path}"
    request = urllib.request.Request(url, data=b"{}", method=method)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 405


def test_page_is_served(live: Live) -> None:
    url = f"http://127.0.0.1:{live.worker.web_port}/"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = resp.read().decode()
        assert resp.headers["Content-Type"].startswith("text/html")
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert "api/live" in body and '<table id="brands">' in body


def test_top_once_prints_the_view(live: Live) -> None:
    """`presale top --once` prints one frame: the campaign, totals, the first
    brands of the report, the first-hour summary, and exits 0."""
    out = live.env.presale("top", "--once", "--top", "5")
    report = live.report
    assert f"presale {report['campaign']['id']}" in out
    assert f"{report['totals']['orders']:,}" in out
    for brand in report["brands"][:5]:
        assert f" {brand['brand_id']} " in out
    assert report["brands"][5]["brand_id"] not in out.split("first-hour milestones")[0]
    words = " ".join(out.split())  # rich wraps lines at the terminal's width
    assert "158 brands passed ¥300.00; 35 brands passed ¥3,000.00" in words
    assert "60 brands doubled" in words
    assert "lag / dead letters 0 / 94" in words


def orders_file(tmp: Path, n: int, brand: str) -> Path:
    path = tmp / "more-orders.jsonl"
    lines = [
        json.dumps(
            {
                "event_id": f"live-e{i}",
                "type": "order",
                "ts": T0 + 1_000 + i,
                "user_id": f"live-u{i}",
                "brand_id": brand,
                "channel": "search",
                "order_id": f"live-o{i}",
                "amount_fen": 2_000_000,  # 7 x ¥20,000: the new leader
            }
        )
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_live_api_carries_the_first_hour_regions_and_minutes(live: Live) -> None:
    """/api/live's first hour by channel and in total, the GMV curve and the
    regions' gross GMV equal the full report's, which equals the reference's."""
    view, report = live.api(), live.report
    assert view["first_hour_channels"] == {
        ch: block["first_hour"] for ch, block in report["channels"].items()
    }
    keep = ("clicks", "carts", "orders", "gross_gmv_fen", "conversion", "vs_last_year")
    assert {k: view["first_hour"][k] for k in keep} == {
        k: report["first_hour"][k] for k in keep
    }
    assert view["minutes"] == report["minutes"]
    assert {r: v["gross_gmv_fen"] for r, v in view["regions"].items()} == {
        r: v["gross_gmv_fen"] for r, v in report["regions"].items()
    }
    top = {b["brand_id"]: b["vip_share"] for b in report["brands"]}
    assert all(b["vip_share"] == top[b["brand_id"]] for b in view["brands"])


def test_page_in_chromium_shows_brands_and_updates(live: Live, tmp_path: Path) -> None:
    """Headless Chromium loads GET /, shows the 20 top brands of the report in
    order, then, without a reload, shows 7 new orders published after it loaded
    (the orders tile and a brand new leader), and a surge alert XADDed to the
    alerts stream. The screenshot is kept in var/live-page.png."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is missing: run `bash deploy/local/tools.sh`")
    report = live.env.report()
    orders_before = report["totals"]["orders"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1100})
            page.goto(f"http://127.0.0.1:{live.worker.web_port}/")
            shown = poll(
                lambda: page.eval_on_selector_all(
                    "#brands tbody tr", "rows => rows.map(r => r.dataset.brand)"
                ),
                lambda rows: len(rows) == 20,
                30,
                "20 brand rows on the page",
            )
            assert shown == [b["brand_id"] for b in report["brands"][:20]]
            assert page.text_content("#total-orders") == f"{orders_before:,}"
            # The GMV curve, the first hour against last year, the regions.
            assert len(page.get_attribute("#curve-line", "d") or "") > 100
            rows = page.eval_on_selector_all(
                "#channels tbody tr",
                "rows => rows.map(r => [...r.cells].map(c => c.textContent))",
            )
            livestream = report["channels"]["livestream"]["first_hour"]
            row = next(r for r in rows if r[0] == "livestream")
            assert row[1] == f"{livestream['clicks']:,}"
            assert (
                row[2] == f"+{round(100 * (livestream['vs_last_year']['clicks'] - 1))}%"
            )
            assert [r[0] for r in rows][-1] == "total"
            assert page.eval_on_selector_all("#regions tbody tr", "r => r.length") == 12
            page.evaluate("window.__loadedOnce = true")  # gone if the page reloads

            live.env.replay(orders_file(tmp_path, 7, "live-newcomer"))
            poll(
                lambda: page.text_content("#total-orders"),
                lambda text: text == f"{orders_before + 7:,}",
                60,
                f"{orders_before + 7:,} orders on the page",
            )
            poll(
                lambda: page.get_attribute("#brands tbody tr", "data-brand"),
                lambda first: first == "live-newcomer",
                30,
                "the new leader on the page",
            )
            xadd_alert(live.env, alert(42, "critical"))
            page.wait_for_selector(
                f"#alerts li[data-alert-id='{alert(42)['alert_id']}']", timeout=30_000
            )
            assert page.evaluate("window.__loadedOnce") is True
            assert "stale" not in (page.text_content("#status") or "")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
