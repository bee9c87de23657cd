"""The report of CONTRACT section 7, shaped from what a store read, and its table."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from processors.counting import CampaignRules
from processors.events import FORBIDDEN_CATEGORIES
from processors.milestones import GMV_THRESHOLD, YOY_DOUBLE
from processors.state import COUNTERS

# The counters of a brand, a channel or the totals, in report order.
# The stored counters with the HyperLogLog `buyers` before the first-hour total.
FIELDS: Final = (*COUNTERS[:-1], "buyers", COUNTERS[-1])


@dataclass
class BrandRow:
    brand_id: str
    counters: Mapping[str, int]
    buyers: int
    by_channel: Mapping[str, Mapping[str, int]]
    channel_buyers: dict[str, int]


def _block(counters: Mapping[str, int], buyers: int) -> dict[str, int]:
    return {
        name: int(buyers) if name == "buyers" else int(counters.get(name, 0))
        for name in FIELDS
    }


def campaign_block(rules: CampaignRules) -> dict[str, Any]:
    return {
        "id": rules.campaign_id,
        "start_ms": rules.start_ms,
        "end_ms": rules.end_ms,
        "first_hour_end_ms": rules.first_hour_end_ms,
    }


def first_hour_summary(
    milestones: list[dict[str, Any]], rules: CampaignRules
) -> dict[str, Any]:
    """Brands that reached each threshold, and brands that doubled last year."""
    reached = {str(t): 0 for t in rules.thresholds_fen}
    doubled = 0
    for m in milestones:
        if m["kind"] == GMV_THRESHOLD and str(m["threshold_fen"]) in reached:
            reached[str(m["threshold_fen"])] += 1
        elif m["kind"] == YOY_DOUBLE:
            doubled += 1
    return {"brands_reached": reached, "brands_doubled": doubled}


# The report's `minutes` by default: the latest hour of the GMV curve.
DEFAULT_MINUTES: Final = 60
# Minutes of the GMV curve a report may ask for: a week of them.
MAX_MINUTES: Final = 10_080
FIRST_HOUR_FIELDS: Final = ("clicks", "carts", "orders", "gross_gmv_fen")
MINUTE_FIELDS: Final = ("clicks", "orders", "gross_gmv_fen")


def ratio(num: int, den: int) -> float | None:
    """A ratio as the report prints it: rounded to 3 decimals, null over 0."""
    return round(num / den, 3) if den else None


def split_labelled(raw: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """`<label>:<counter>` fields by label (a region may hold a `:` itself)."""
    out: dict[str, dict[str, int]] = {}
    for name, value in raw.items():
        label, _, counter = name.rpartition(":")
        out.setdefault(label, {})[counter] = value
    return out


def latest_minutes(raw: Mapping[str, int], n: int) -> list[dict[str, int]]:
    """The latest `n` minutes with counted events, oldest first."""
    by_minute = split_labelled(raw)
    latest = sorted(by_minute, key=int)[-n:] if n > 0 else []
    return [
        {"minute_ms": int(m), **{f: by_minute[m].get(f, 0) for f in MINUTE_FIELDS}}
        for m in latest
    ]


def first_hour_block(
    counts: Mapping[str, int], last_year: tuple[int, int, int] | None
) -> dict[str, Any]:
    """A first hour's counts, conversion, and the ratios to last year's
    (clicks, orders, gross fen): null where last year's is 0 or absent."""
    block: dict[str, Any] = {f: int(counts.get(f, 0)) for f in FIRST_HOUR_FIELDS}
    clicks, orders = block["clicks"], block["orders"]
    block["conversion"] = ratio(orders, clicks)
    last_clicks, last_orders, last_gross = last_year or (0, 0, 0)
    block["vs_last_year"] = {
        "clicks": ratio(clicks, last_clicks),
        "orders": ratio(orders, last_orders),
        "gross_gmv": ratio(block["gross_gmv_fen"], last_gross),
        # (orders / clicks) / (last orders / last clicks), in integers first;
        # null when last year's conversion is 0 or has no clicks under it
        "conversion": ratio(orders * last_clicks, clicks * last_orders)
        if last_clicks
        else None,
    }
    return block


def milestone_order(m: Mapping[str, Any]) -> tuple[Any, ...]:
    """Milestones in the order they were crossed."""
    return (m["crossed_at_ms"], m["kind"], m["brand_id"], m["threshold_fen"])


def totals_rows(t: Mapping[str, int]) -> list[tuple[str, str, str, str]]:
    """The money and traffic lines both terminal views open with."""
    return [
        ("gross GMV", yuan(t["gross_gmv_fen"]), "net GMV", yuan(t["net_gmv_fen"])),
        (
            "first-hour gross",
            yuan(t["first_hour_gross_gmv_fen"]),
            "orders",
            f"{t['orders']:,}",
        ),
        ("clicks", f"{t['clicks']:,}", "carts", f"{t['carts']:,}"),
    ]


def shape_report(
    *,
    rules: CampaignRules,
    totals: Mapping[str, int],
    buyers: int,
    channels: Mapping[str, Mapping[str, int]],
    channel_buyers: Mapping[str, int],
    brands: list[BrandRow],
    milestones: list[dict[str, Any]],
    dead_letters: Mapping[str, int],
    out_of_window: int,
    watermark_ms: int,
    late: int = 0,
    alerts: list[dict[str, Any]] | None = None,
    regions: Mapping[str, Mapping[str, int]] | None = None,
    region_buyers: Mapping[str, int] | None = None,
    first_hour: Mapping[str, Mapping[str, int]] | None = None,
    minutes: list[dict[str, int]] | None = None,
) -> dict[str, Any]:
    by_hour = first_hour or {}
    base = rules.channel_baselines
    hour_total = {
        f: sum(c.get(f, 0) for c in by_hour.values()) for f in FIRST_HOUR_FIELDS
    }
    # The total's last year is the sum of every channel's in the CSV.
    last_total = (
        tuple(sum(v[i] for v in base.values()) for i in range(3)) if base else None
    )
    region_counts = regions or {}
    return {
        "campaign": campaign_block(rules),
        "totals": _block(totals, buyers),
        "channels": {
            ch: {
                **_block(channels[ch], channel_buyers.get(ch, 0)),
                "first_hour": first_hour_block(by_hour.get(ch, {}), base.get(ch)),
            }
            for ch in sorted(channels)
        },
        "first_hour": {
            **first_hour_summary(milestones, rules),
            **first_hour_block(hour_total, last_total),  # type: ignore[arg-type]
        },
        "regions": {
            r: _block(region_counts[r], (region_buyers or {}).get(r, 0))
            for r in sorted(region_counts)
        },
        "minutes": list(minutes or []),
        "brands": [
            {
                "brand_id": row.brand_id,
                **_block(row.counters, row.buyers),
                "vip_share": ratio(
                    int(row.counters.get("vip_orders", 0)),
                    int(row.counters.get("orders", 0)),
                ),
                "baseline_first_hour_gmv_fen": rules.baselines_fen.get(row.brand_id, 0),
                "by_channel": {
                    ch: _block(row.by_channel[ch], row.channel_buyers.get(ch, 0))
                    for ch in sorted(row.by_channel)
                },
            }
            for row in brands
        ],
        "milestones": sorted(milestones, key=milestone_order),
        # In the order raised, which is minute order (streams/alerts.py).
        "alerts": list(alerts or []),
        "dead_letters": sum(dead_letters.values()),
        "dead_letters_by_reason": dict(sorted(dead_letters.items())),
        "out_of_window": out_of_window,
        "late": late,
        "watermark_ms": watermark_ms,
        "consumer_lag": None,
    }


def shown(value: object) -> Any:
    """A producer's string for rich: `Text`, never markup (a brand named `[/]`
    broke the table), with every control and format character written as its
    escape (`\\x1b`), so no raw ESC from Redis reaches the terminal, even from
    state written before validation refused them (CONTRACT section 2)."""
    from rich.text import Text

    text = str(value)
    if not text.isprintable():
        text = "".join(
            char.encode("unicode_escape").decode("ascii")
            if unicodedata.category(char) in FORBIDDEN_CATEGORIES
            else char
            for char in text
        )
    return Text(text)


def times(value: float | None) -> str:
    """A ratio to last year as a change: 1.4 -> +40%, null -> n/a."""
    if value is None:
        return "n/a"
    return f"{(value - 1) * 100:+.0f}%" if value < 2 else f"{value:.1f}x"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def first_hour_rows(report: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """The first hour per channel and in total, against last year: the rows
    `presale report` and `presale top` print."""
    rows: list[tuple[str, ...]] = []
    blocks = [(ch, c["first_hour"]) for ch, c in report.get("channels", {}).items()]
    if "clicks" in report["first_hour"]:
        blocks.append(("total", report["first_hour"]))
    for name, fh in blocks:
        vs = fh["vs_last_year"]
        rows.append(
            (
                name,
                f"{fh['clicks']:,}",
                times(vs["clicks"]),
                f"{fh['orders']:,}",
                times(vs["orders"]),
                yuan(fh["gross_gmv_fen"]),
                times(vs["gross_gmv"]),
                percent(fh["conversion"]),
                times(vs["conversion"]),
            )
        )
    return rows


FIRST_HOUR_COLUMNS: Final = (
    "channel",
    "clicks",
    "vs LY",
    "orders",
    "vs LY",
    "gross GMV",
    "vs LY",
    "conversion",
    "vs LY",
)


def yuan(fen: int) -> str:
    """Fen as an exact yuan amount, e.g. ¥123,456.78."""
    return f"¥{fen / 100:,.2f}"


def table(report: Mapping[str, Any]) -> Any:
    """A rich renderable of the report, for `presale report` without --json."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    camp = report["campaign"]
    t = report["totals"]
    head = Table(title=shown(f"presale {camp['id']}"), show_header=False, box=None)
    for row in totals_rows(t):
        head.add_row(*row)
    head.add_row("buyers (≈)", f"{t['buyers']:,}", "cancels", f"{t['cancels']:,}")
    fh = report["first_hour"]
    reached = ", ".join(
        f"{n:,} brands reached {yuan(int(th))}"
        for th, n in fh["brands_reached"].items()
    )
    head.add_row(
        "first hour", reached, "doubled YoY", f"{fh['brands_doubled']:,} brands"
    )
    lag = report.get("consumer_lag")
    head.add_row(
        "dead letters",
        f"{report['dead_letters']:,}",
        "consumer lag",
        "unknown" if lag is None else f"{lag:,}",
    )
    brands = Table(title="brands by gross GMV")
    for col in (
        "#",
        "brand",
        "gross GMV",
        "net GMV",
        "first hour",
        "orders",
        "clicks",
        "VIP share",
    ):
        # Amounts are never wrapped or cut: in a narrow terminal the brand
        # column folds instead.
        if col == "brand":
            brands.add_column(col, justify="left", overflow="fold")
        else:
            brands.add_column(col, justify="right", no_wrap=True, min_width=len(col))
    for i, b in enumerate(report["brands"], start=1):
        brands.add_row(
            str(i),
            shown(b["brand_id"]),
            yuan(b["gross_gmv_fen"]),
            yuan(b["net_gmv_fen"]),
            yuan(b["first_hour_gross_gmv_fen"]),
            f"{b['orders']:,}",
            f"{b['clicks']:,}",
            percent(b.get("vip_share")),
        )
    hour = Table(title="first hour against last year")
    for col in FIRST_HOUR_COLUMNS:
        hour.add_column(col, justify="left" if col == "channel" else "right")
    for line in first_hour_rows(report):
        hour.add_row(*line)
    regions = Table(title="regions by gross GMV")
    for col in ("region", "gross GMV", "orders", "clicks", "buyers (≈)"):
        regions.add_column(col, justify="left" if col == "region" else "right")
    by_gross = sorted(
        report.get("regions", {}).items(),
        key=lambda kv: (-kv[1]["gross_gmv_fen"], kv[0]),
    )
    for name, r in by_gross:
        regions.add_row(
            Text(name),
            yuan(r["gross_gmv_fen"]),
            f"{r['orders']:,}",
            f"{r['clicks']:,}",
            f"{r['buyers']:,}",
        )
    curve = Table(title="GMV by event-time minute (UTC)")
    for col in ("minute", "clicks", "orders", "gross GMV"):
        curve.add_column(col, justify="right")
    for m in report.get("minutes", []):
        minute = datetime.fromtimestamp(m["minute_ms"] / 1000, tz=UTC)
        curve.add_row(
            minute.strftime("%m-%d %H:%M"),
            f"{m['clicks']:,}",
            f"{m['orders']:,}",
            yuan(m["gross_gmv_fen"]),
        )
    parts = [head, brands, hour, regions, curve]
    alerts = report.get("alerts") or []
    head.add_row("surge alerts", f"{len(alerts):,}", "", "")
    if not alerts:
        return Group(*parts)
    feed = Table(title="newest surge alerts")
    for col in (
        "minute (UTC)",
        "scope",
        "key",
        "observed",
        "baseline",
        "x",
        "severity",
    ):
        feed.add_column(col, justify="right" if col in ("observed", "x") else "left")
    for a in sorted(alerts, key=lambda a: a["minute_ms"], reverse=True)[:10]:
        minute = datetime.fromtimestamp(a["minute_ms"] / 1000, tz=UTC)
        feed.add_row(
            minute.strftime("%m-%d %H:%M"),
            shown(a["scope"]),
            shown(a["key"]),
            f"{a['observed']:,}",
            f"{a['baseline']:,.1f}",
            f"{a['ratio']:.2f}",
            shown(a["severity"]),
        )
    return Group(*parts, feed)
