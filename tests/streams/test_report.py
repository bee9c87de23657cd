"""streams.report.shape_report and the in-memory store's report."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from processors.counting import CampaignRules, plan_batch
from processors.events import Event
from processors.state import COUNTERS, Applied
from streams.report import FIELDS, BrandRow, shape_report
from streams.store import MemoryStore

T0 = 1_700_000_000_000
RULES = CampaignRules(
    campaign_id="c1",
    start_ms=T0,
    end_ms=T0 + 86_400_000,
    thresholds_fen=(1_000, 5_000),
    baselines_fen={"b1": 700},
)
# CONTRACT section 7: the counters of the totals and of a brand, in this order.
CONTRACT_FIELDS = [
    "clicks",
    "carts",
    "orders",
    "cancels",
    "units",
    "gross_gmv_fen",
    "net_gmv_fen",
    "vip_orders",
    "buyers",
    "first_hour_gross_gmv_fen",
]


def milestone(kind: str, brand: str, threshold: int, at: int = T0) -> dict[str, Any]:
    return {
        "kind": kind,
        "brand_id": brand,
        "threshold_fen": threshold,
        "crossed_at_ms": at,
        "detected_at_ms": at + 5,
    }


def shape(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "rules": RULES,
        "totals": {},
        "buyers": 0,
        "channels": {},
        "channel_buyers": {},
        "brands": [],
        "milestones": [],
        "dead_letters": {},
        "out_of_window": 0,
        "watermark_ms": 0,
    }
    args.update(overrides)
    return shape_report(**args)


def test_empty_report() -> None:
    """With nothing counted, every counter is 0 and every threshold has reached
    by 0 brands."""
    report = shape()
    assert report["campaign"] == {
        "id": "c1",
        "start_ms": T0,
        "end_ms": T0 + 86_400_000,
        "first_hour_end_ms": T0 + 3_600_000,
    }
    assert report["totals"] == dict.fromkeys(CONTRACT_FIELDS, 0)
    assert report["first_hour"] == {
        "brands_reached": {"1000": 0, "5000": 0},
        "brands_doubled": 0,
        **dict.fromkeys(("clicks", "carts", "orders", "gross_gmv_fen"), 0),
        "conversion": None,
        "vs_last_year": dict.fromkeys(("clicks", "orders", "gross_gmv", "conversion")),
    }
    assert (report["regions"], report["minutes"]) == ({}, [])
    assert (report["brands"], report["milestones"], report["alerts"]) == ([], [], [])
    assert report["dead_letters"] == 0


def test_report_key_order() -> None:
    """The top-level keys of CONTRACT section 7 come in the contract's order."""
    report = shape()
    contract = [
        "campaign",
        "totals",
        "first_hour",
        "brands",
        "milestones",
        "alerts",
        "dead_letters",
        "consumer_lag",
    ]
    assert [k for k in report if k in contract] == contract


def test_counter_field_order() -> None:
    """Totals, brands and channels list their counters in the contract's order,
    brand rows as brand_id, counters, baseline, by_channel."""
    assert list(FIELDS) == CONTRACT_FIELDS
    counters = {name: i + 1 for i, name in enumerate(COUNTERS)}
    row = BrandRow("b1", counters, 42, {"search": counters}, {"search": 7})
    report = shape(
        totals=counters,
        buyers=9,
        channels={"search": counters},
        channel_buyers={"search": 3},
        brands=[row],
    )
    assert list(report["totals"]) == CONTRACT_FIELDS
    assert list(report["channels"]["search"]) == [*CONTRACT_FIELDS, "first_hour"]
    brand = report["brands"][0]
    assert list(brand) == [
        "brand_id",
        *CONTRACT_FIELDS,
        "vip_share",
        "baseline_first_hour_gmv_fen",
        "by_channel",
    ]
    assert list(brand["by_channel"]["search"]) == CONTRACT_FIELDS
    assert (report["totals"]["buyers"], brand["buyers"]) == (9, 42)
    assert brand["by_channel"]["search"]["buyers"] == 7
    assert brand["gross_gmv_fen"] == COUNTERS.index("gross_gmv_fen") + 1
    assert brand["baseline_first_hour_gmv_fen"] == 700


def test_brands_reached_and_doubled() -> None:
    """brands_reached counts, per configured threshold, the brands with that
    gmv_threshold milestone; brands_doubled counts yoy_double milestones; a
    milestone at a threshold no longer configured is left out."""
    report = shape(
        milestones=[
            milestone("gmv_threshold", "b1", 1_000),
            milestone("gmv_threshold", "b2", 1_000),
            milestone("gmv_threshold", "b3", 1_000),
            milestone("gmv_threshold", "b1", 5_000),
            milestone("gmv_threshold", "b9", 2_500),  # not a configured threshold
            milestone("yoy_double", "b1", 1_400),
            milestone("yoy_double", "b2", 900),
        ]
    )
    summary = {k: report["first_hour"][k] for k in ("brands_reached", "brands_doubled")}
    assert summary == {"brands_reached": {"1000": 3, "5000": 1}, "brands_doubled": 2}
    assert len(report["milestones"]) == 7


def test_milestones_sorted() -> None:
    """Milestones are listed by crossed_at_ms, then kind, brand and threshold."""
    ms = [
        milestone("yoy_double", "b1", 1_400, at=T0 + 5),
        milestone("gmv_threshold", "b2", 5_000, at=T0 + 5),
        milestone("gmv_threshold", "b1", 5_000, at=T0 + 5),
        milestone("gmv_threshold", "b1", 1_000, at=T0 + 5),
        milestone("gmv_threshold", "b9", 1_000, at=T0 + 1),
    ]
    got = [
        (m["crossed_at_ms"] - T0, m["kind"], m["brand_id"], m["threshold_fen"])
        for m in shape(milestones=ms)["milestones"]
    ]
    assert got == [
        (1, "gmv_threshold", "b9", 1_000),
        (5, "gmv_threshold", "b1", 1_000),
        (5, "gmv_threshold", "b1", 5_000),
        (5, "gmv_threshold", "b2", 5_000),
        (5, "yoy_double", "b1", 1_400),
    ]


def test_channels_sorted_and_dead_letters_summed() -> None:
    """Channels are listed by name, brands keep the order given, and
    dead_letters is the sum over reasons (3 + 4 = 7)."""
    zero: dict[str, int] = {}
    rows = [BrandRow(b, zero, 0, {}, {}) for b in ("bz", "ba", "bm")]
    report = shape(
        channels={"store": zero, "detail": zero, "search": zero},
        brands=rows,
        dead_letters={"too_large": 3, "bad_value": 4},
    )
    assert list(report["channels"]) == ["detail", "search", "store"]
    assert [b["brand_id"] for b in report["brands"]] == ["bz", "ba", "bm"]
    assert report["dead_letters"] == 7
    assert report["dead_letters_by_reason"] == {"bad_value": 4, "too_large": 3}


# ---------------------------------------------------------------------------
# MemoryStore.report

GROSS = {"b1": 300, "b2": 500, "b3": 300, "b0": 100, "b4": 500, "b5": 0}


def store_with_brands() -> MemoryStore:
    """Brands with these gross GMVs (b5 has only a click), applied as orders."""
    store = MemoryStore(RULES)
    records = []
    for i, (brand, gross) in enumerate(GROSS.items()):
        kind = "order" if gross else "click"
        event = Event(
            f"e{i}",
            kind,
            T0 + i,
            f"u{i}",
            brand,
            order_id=f"o{i}" if gross else None,
            amount_fen=gross,
        )
        records.append(("orders:0", i, event))
    plan = plan_batch(records, RULES, {})
    assert isinstance(asyncio.run(store.apply(plan, 0)), Applied)
    return store


def test_memory_report_sorts_brands() -> None:
    """Brands come highest gross_gmv_fen first, ties by brand_id ascending."""
    report = asyncio.run(store_with_brands().report())
    got = [(b["brand_id"], b["gross_gmv_fen"]) for b in report["brands"]]
    expected = sorted(GROSS.items(), key=lambda kv: (-kv[1], kv[0]))
    assert got == expected
    assert [b for b, _g in got] == ["b2", "b4", "b1", "b3", "b0", "b5"]
    assert report["totals"]["gross_gmv_fen"] == sum(GROSS.values())


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        (None, ["b2", "b4", "b1", "b3", "b0", "b5"]),
        (0, []),
        (1, ["b2"]),
        (3, ["b2", "b4", "b1"]),
        (6, ["b2", "b4", "b1", "b3", "b0", "b5"]),
        (100, ["b2", "b4", "b1", "b3", "b0", "b5"]),
    ],
)
def test_memory_report_top(top: int | None, expected: list[str]) -> None:
    """`top` keeps the N biggest brands; the totals still cover every brand."""
    report = asyncio.run(store_with_brands().report(top=top))
    assert [b["brand_id"] for b in report["brands"]] == expected
    assert report["totals"]["orders"] == 5


def test_memory_report_brand_detail() -> None:
    """A brand row carries its counters, buyers, baseline and by-channel block."""
    report = asyncio.run(store_with_brands().report())
    b1 = next(b for b in report["brands"] if b["brand_id"] == "b1")
    assert (b1["orders"], b1["gross_gmv_fen"], b1["buyers"]) == (1, 300, 1)
    assert b1["baseline_first_hour_gmv_fen"] == 700
    assert b1["by_channel"]["other"]["gross_gmv_fen"] == 300
    assert report["totals"]["buyers"] == 5


def _render(report: dict[str, Any]) -> str:
    from rich.console import Console

    from streams.report import table

    with open(os.devnull, "w") as sink:
        console = Console(width=120, record=True, file=sink)
        console.print(table(report))
    return console.export_text()


def test_table_shows_the_newest_surge_alerts() -> None:
    """The report table counts the alerts and lists the newest first (by
    minute); with none it says 0 and shows no alerts table."""
    minute = 1_760_530_260_000  # 2025-10-15 12:11 UTC
    alerts = [
        {
            "alert_id": f"room:r{i}:{minute + i * 60_000}",
            "scope": "room",
            "key": f"r{i}",
            "minute_ms": minute + i * 60_000,
            "observed": 250 + i,
            "baseline": 100.0,
            "ratio": 2.5,
            "severity": "critical",
            "raised_at_ms": minute + 120_000,
        }
        for i in range(3)
    ]
    text = _render(shape(alerts=alerts))
    assert "surge alerts" in text and "newest surge alerts" in text
    rows = [line for line in text.splitlines() if " room " in line]
    cells = [[c.strip() for c in r.split("│") if c.strip()] for r in rows]
    assert [c[2] for c in cells] == ["r2", "r1", "r0"]
    assert "10-15 12:13" in rows[0] and "critical" in rows[0]
    empty = _render(shape())
    assert "surge alerts" in empty and "newest surge alerts" not in empty


def test_table_shows_the_first_hour_regions_and_minutes() -> None:
    """The readable table prints each channel's first hour against last year
    (+40% clicks for 140 against 100, 2.3x orders for 23 against 10), the
    regions, the GMV curve by minute and each brand's VIP share."""
    rules = CampaignRules(
        "c1", T0, T0 + 86_400_000, channel_baselines={"livestream": (100, 10, 500)}
    )
    hour = {
        "livestream": {"clicks": 140, "carts": 3, "orders": 23, "gross_gmv_fen": 900}
    }
    row = BrandRow("b1", {"orders": 4, "vip_orders": 1}, 1, {}, {})
    report = shape(
        rules=rules,
        channels={"livestream": {"clicks": 140}},
        first_hour=hour,
        regions={"ZJ": {"gross_gmv_fen": 12_300, "orders": 2}},
        region_buyers={"ZJ": 2},
        minutes=[{"minute_ms": T0, "clicks": 5, "orders": 1, "gross_gmv_fen": 4_200}],
        brands=[row],
    )
    vs = report["channels"]["livestream"]["first_hour"]["vs_last_year"]
    # conversion 23/140 against 10/100: 1.643
    assert vs == {"clicks": 1.4, "orders": 2.3, "gross_gmv": 1.8, "conversion": 1.643}
    assert report["first_hour"]["vs_last_year"] == vs  # one channel: the total
    text = _render(report)
    live = next(line for line in text.splitlines() if "livestream" in line)
    assert "+40%" in live and "2.3x" in live and "16.4%" in live and "+64%" in live
    assert "ZJ" in text and "¥123.00" in text
    assert "¥42.00" in text
    assert "25.0%" in text  # b1's VIP share: 1 of 4 orders
