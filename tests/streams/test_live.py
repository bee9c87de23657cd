"""The live view's pure parts: the top parameter, the gauges it exports, the
terminal frame, and the metric set's names and labels (no services)."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from streams.live import MAX_TOP, METRIC_RANKS, export, parse_top
from streams.metrics import Metrics
from streams.top import frame

T0 = 1_760_529_600_000


def view(n_brands: int = 3) -> dict[str, Any]:
    brands = [
        {
            "rank": i + 1,
            "brand_id": f"brand-{i}",
            "gross_gmv_fen": 1000 * (n_brands - i),
            "net_gmv_fen": 900 * (n_brands - i),
            "first_hour_gross_gmv_fen": 500 * (n_brands - i),
            "orders": n_brands - i,
            "clicks": 10,
            "carts": 5,
            "baseline_first_hour_gmv_fen": 100 if i == 0 else 0,
        }
        for i in range(n_brands)
    ]
    return {
        "campaign": {
            "id": "c1",
            "start_ms": T0,
            "end_ms": T0 + 1,
            "first_hour_end_ms": 0,
        },
        "totals": {
            "clicks": 7,
            "carts": 6,
            "orders": 5,
            "cancels": 1,
            "units": 9,
            "gross_gmv_fen": 123_456,
            "net_gmv_fen": 120_000,
            "vip_orders": 2,
            "first_hour_gross_gmv_fen": 100_000,
        },
        "channels": {"livestream": 100_000, "search": 23_456},
        "first_hour": {"brands_reached": {"1000": 2, "10000": 1}, "brands_doubled": 4},
        "brand_count": n_brands,
        "room_count": 7,
        "brands": brands,
        "milestone_count": 1,
        "milestones": [
            {
                "kind": "yoy_double",
                "brand_id": "brand-0",
                "threshold_fen": 200,
                "crossed_at_ms": T0 + 60_000,
                "detected_at_ms": T0 + 61_000,
            }
        ],
        "alert_count": 1,
        "alerts": [
            {
                "alert_id": "a1",
                "scope": "room",
                "key": "r9",
                "minute_ms": T0 + 120_000,
                "observed": 140,
                "baseline": 80.0,
                "ratio": 1.75,
                "severity": "critical",
                "raised_at_ms": T0 + 181_000,
            }
        ],
        "dead_letters": 3,
        "watermark_ms": T0 + 3_000,
        "consumer_lag": 0,
        "read_at_ms": T0 + 200_000,
    }


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (None, 20),
        ("", 20),
        ("5", 5),
        ("0", 1),
        ("1000", MAX_TOP),
        ("-3", 20),
        ("abc", 20),
        ("2.5", 20),
        ("²", 20),  # isdigit() but not int(): answered 500 before issue 16
        ("٣", 20),  # Arabic-Indic three: int() reads it; not ASCII, so junk
    ],
)
def test_parse_top(raw: str | None, want: int) -> None:
    assert parse_top(raw) == want


def test_export_sets_the_campaign_gauges() -> None:
    m = Metrics.create()
    export(view(3), m)
    get = m.registry.get_sample_value
    assert get("presale_gmv_fen", {"kind": "gross"}) == 123_456
    assert get("presale_gmv_fen", {"kind": "net"}) == 120_000
    assert get("presale_gmv_fen", {"kind": "first_hour_gross"}) == 100_000
    assert get("presale_channel_gross_gmv_fen", {"channel": "search"}) == 23_456
    assert get("presale_first_hour_brands_reached", {"threshold_fen": "1000"}) == 2
    assert get("presale_first_hour_brands_doubled") == 4
    assert get("presale_top_brand_gross_gmv_fen", {"rank": "1"}) == 3000
    assert get("presale_top_brand_gross_gmv_fen", {"rank": "3"}) == 1000
    # Ranks past the brands there are read 0; no rank past METRIC_RANKS exists.
    assert get("presale_top_brand_gross_gmv_fen", {"rank": str(METRIC_RANKS)}) == 0
    assert get("presale_top_brand_gross_gmv_fen", {"rank": "11"}) is None
    # issue 16: distinct brands and rooms, for the PresaleTooManyIds rule
    assert get("presale_distinct_ids", {"kind": "brands"}) == 3
    assert get("presale_distinct_ids", {"kind": "rooms"}) == 7


def test_metric_names_and_bounded_labels() -> None:
    """Prometheus naming (counters `_total`, a unit in every other name) and no
    label that could carry a brand, user, event or order id."""
    units = ("_records", "_seconds", "_fen", "_brands_reached", "_brands_doubled")
    units += ("_ids",)  # presale_distinct_ids: a count of distinct ids
    bounded = {"topic", "type", "reason", "kind", "scope", "severity", "service"}
    bounded |= {"channel", "rank", "threshold_fen"}
    m = Metrics.create()
    m.alerts.labels("room", "critical").inc()
    assert (
        m.registry.get_sample_value(
            "presale_alerts_total", {"scope": "room", "severity": "critical"}
        )
        == 1
    )
    for family in m.registry.collect():
        assert family.name.startswith("presale_")
        if family.type != "counter":
            assert family.name.endswith(units), family.name
    for metric in vars(m).values():
        names = getattr(metric, "_labelnames", ())
        assert set(names) <= bounded, names


def test_terminal_frame_shows_the_view() -> None:
    console = Console(width=140, record=True, color_system=None)
    console.print(frame(view(3), status="stale: Redis away"))
    text = console.export_text()
    for expected in (
        "presale c1",
        "¥1,234.56",  # gross GMV
        "brand-0",
        "brand-2",
        "2 brands passed ¥10.00",
        "4 brands doubled",
        "critical room r9: 140 vs 80.0 (1.75x)",
        "brand-0 doubled last year (¥2.00)",
        "5.00x",  # brand-0's first hour against its baseline
        "stale: Redis away",
        "0 / 3",  # lag / dead letters
    ):
        assert expected in text, expected
