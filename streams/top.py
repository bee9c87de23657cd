"""`presale top`: the live page's view in the terminal, refreshed with rich's Live."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from processors.events import INPUT_TOPICS
from streams.errors import PresaleError
from streams.kafka import lag, log_end_offsets
from streams.live import read_live
from streams.report import (
    FIRST_HOUR_COLUMNS,
    first_hour_rows,
    percent,
    shown,
    totals_rows,
    yuan,
)
from streams.report import ratio as ratio_of
from streams.settings import Settings
from streams.store import RedisStore


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S")


def frame(view: Mapping[str, Any], status: str = "") -> Any:
    """One screen of the live view as a rich renderable."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    t = view["totals"]
    lag_text = (
        "unknown" if view["consumer_lag"] is None else f"{view['consumer_lag']:,}"
    )
    head = Table.grid(padding=(0, 2))
    for _ in range(4):
        head.add_column()
    for row in totals_rows(t):
        head.add_row(*row)
    head.add_row(
        "brands selling",
        f"{view['brand_count']:,}",
        "lag / dead letters",
        f"{lag_text} / {view['dead_letters']:,}",
    )
    fh = view["first_hour"]
    reached = "; ".join(
        f"{n:,} brands passed {yuan(int(th))}" for th, n in fh["brands_reached"].items()
    )
    first_hour = Text.assemble(
        ("First hour: ", "bold"),
        reached,
        f"; {fh['brands_doubled']:,} brands doubled last year's first hour",
    )

    brands = Table(title="GMV race: top brands by gross GMV", expand=True)
    for col in (
        "#",
        "brand",
        "gross GMV",
        "first hour",
        "vs last year",
        "orders",
        "VIP share",
    ):
        brands.add_column(col, justify="left" if col == "brand" else "right")
    for b in view["brands"]:
        base = b["baseline_first_hour_gmv_fen"]
        ratio = f"{b['first_hour_gross_gmv_fen'] / base:.2f}x" if base else "-"
        brands.add_row(
            str(b["rank"]),
            shown(b["brand_id"]),
            yuan(b["gross_gmv_fen"]),
            yuan(b["first_hour_gross_gmv_fen"]),
            ratio,
            f"{b['orders']:,}",
            percent(b.get("vip_share")),
        )
    hour = Table(title="first hour against last year", expand=True)
    for col in FIRST_HOUR_COLUMNS:
        hour.add_column(col, justify="left" if col == "channel" else "right")
    for line in first_hour_rows(
        {
            "channels": {
                ch: {"first_hour": block}
                for ch, block in view.get("first_hour_channels", {}).items()
            },
            "first_hour": view["first_hour"],
        }
    ):
        hour.add_row(*line)
    regions = Table(title="regions by gross GMV", expand=True)
    for col in ("region", "gross GMV", "orders", "VIP share"):
        regions.add_column(col, justify="left" if col == "region" else "right")
    for name, r in list(view.get("regions", {}).items())[:12]:
        regions.add_row(
            Text(name),  # producer data, never markup
            yuan(r["gross_gmv_fen"]),
            f"{r['orders']:,}",
            percent(ratio_of(r["vip_orders"], r["orders"])),
        )
    curve = Text.assemble(
        ("GMV by minute ", "bold"), sparkline(view.get("minutes", []))
    )

    alerts = Table(title=f"surge alerts ({view['alert_count']:,})", expand=True)
    alerts.add_column("minute")
    alerts.add_column("alert")
    for a in view["alerts"]:
        severity = str(a.get("severity", ""))
        alerts.add_row(
            _clock(int(a.get("minute_ms", 0))),
            Text.assemble(
                (
                    shown(severity).plain,
                    "bold red" if severity == "critical" else "yellow",
                ),
                " ",
                shown(f"{a.get('scope', '')} {a.get('key', '')}"),
                f": {a.get('observed', 0):,} vs {float(a.get('baseline', 0.0)):.1f} "
                f"({float(a.get('ratio', 0.0)):.2f}x)",
            ),
        )
    milestones = Table(
        title=f"first-hour milestones ({view['milestone_count']:,})", expand=True
    )
    milestones.add_column("crossed")
    milestones.add_column("milestone")
    for m in view["milestones"]:
        what = (
            f"doubled last year ({yuan(m['threshold_fen'])})"
            if m["kind"] == "yoy_double"
            else f"passed {yuan(m['threshold_fen'])}"
        )
        milestones.add_row(
            _clock(m["crossed_at_ms"]), Text.assemble(shown(m["brand_id"]), f" {what}")
        )
    side = Table.grid(expand=True)
    side.add_column(ratio=1)
    side.add_column(ratio=1)
    side.add_row(alerts, milestones)
    title = Text.assemble(
        (shown(f"presale {view['campaign']['id']}").plain, "bold"),
        f"  read {_clock(view['read_at_ms'])} UTC",
        (f"  {status}" if status else "", "red"),
    )
    facets = Table.grid(expand=True)
    facets.add_column(ratio=2)
    facets.add_column(ratio=1)
    facets.add_row(hour, regions)
    return Group(title, head, first_hour, curve, brands, facets, side)


BARS = " ▁▂▃▄▅▆▇█"


def sparkline(minutes: list[Mapping[str, int]]) -> str:
    """The GMV curve as one line of block characters, oldest minute first, and
    the latest minute's GMV."""
    if not minutes:
        return "-"
    values = [m["gross_gmv_fen"] for m in minutes]
    top = max(values) or 1
    bars = "".join(BARS[round(v / top * (len(BARS) - 1))] for v in values)
    return f"{bars}  latest minute {yuan(values[-1])}"


async def read_view(store: RedisStore, settings: Settings, top: int) -> dict[str, Any]:
    """The view with the exact consumer lag (as `presale report` measures it)."""
    ends = await log_end_offsets(settings, INPUT_TOPICS)
    applied = await store.applied_offsets(ends)
    view = await read_live(
        store.client, settings.redis_prefix, settings.rules, top, recent=10
    )
    view["consumer_lag"] = lag(ends, applied)
    return view


async def run_top(settings: Settings, top: int, interval_s: float, once: bool) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    store = RedisStore.from_settings(settings)
    try:
        await store.ping()
        view = await read_view(store, settings, top)
        if once:
            console.print(frame(view))
            return 0
        with Live(frame(view), console=console, screen=False, auto_refresh=False) as ui:
            while True:
                started = time.monotonic()
                status = ""
                try:
                    view = await read_view(store, settings, top)
                except (PresaleError, RedisError, OSError) as exc:
                    # Keep the last frame on screen and say why it is old.
                    status = f"stale: {exc}"
                ui.update(frame(view, status), refresh=True)
                await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))
    finally:
        await store.close()
