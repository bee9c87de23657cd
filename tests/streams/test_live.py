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
    units += ("_ids", "_ratio")  # presale_distinct_ids counts distinct ids
    bounded = {"topic", "type", "reason", "kind", "scope", "severity", "service"}
    # region: at most PRESALE_MAX_REGIONS (64) values and `other`
    bounded |= {"channel", "rank", "threshold_fen", "measure", "region"}
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


def test_export_channel_and_region_gauges() -> None:
    """Each channel's first hour against last year and each region's gross GMV
    reach Prometheus; a ratio with no base (null) leaves its gauge unset."""
    m = Metrics.create()
    v = view(1)
    v["first_hour_channels"] = {
        "livestream": {
            "vs_last_year": {"clicks": 1.4, "orders": None, "gross_gmv": 2.0}
        }
    }
    v["regions"] = {"CN-ZJ": {"gross_gmv_fen": 700}}
    export(v, m)
    get = m.registry.get_sample_value
    name = "presale_channel_first_hour_vs_last_year_ratio"
    assert get(name, {"channel": "livestream", "measure": "clicks"}) == 1.4
    assert get(name, {"channel": "livestream", "measure": "orders"}) is None
    assert get("presale_region_gross_gmv_fen", {"region": "CN-ZJ"}) == 700


def test_live_view_reads_the_facets(step_redis_url: str) -> None:
    """/api/live's model carries the first hour by channel against last year,
    the regions, the GMV curve by minute and each brand's VIP share, as the
    atomic step stored them (3 livestream clicks against 2 last year: 1.5)."""
    import asyncio
    import uuid

    import redis.asyncio as aioredis

    from processors.counting import CampaignRules, plan_batch
    from streams.live import read_live
    from streams.store import RedisStore
    from tests.processors.make import click, order

    t0 = 1_700_000_040_000  # a whole minute
    rules = CampaignRules(
        "c1", t0, t0 + 86_400_000, channel_baselines={"livestream": (2, 1, 100)}
    )
    live = {"channel": "livestream", "room_id": "r1"}
    records = [
        ("clicks:0", i, click(f"c{i}", ts=t0 + i, region="CN-ZJ", **live))
        for i in range(3)
    ]
    records += [
        ("orders:0", 0, order("o1", 500, ts=t0, vip=True, region="CN-BJ", **live)),
        ("orders:0", 1, order("o2", 300, ts=t0 + 60_000, **live)),
    ]
    prefix = f"t:{{{uuid.uuid4().hex}}}:"

    async def go() -> dict[str, Any]:
        store = RedisStore.from_url(step_redis_url, prefix, rules)
        await store.apply(plan_batch(records, rules, {}), 0)
        await store.close()
        client = aioredis.Redis.from_url(step_redis_url)
        try:
            return await read_live(client, prefix, rules)
        finally:
            await client.aclose()

    v = asyncio.run(go())
    hour = v["first_hour_channels"]["livestream"]
    assert (hour["clicks"], hour["orders"], hour["gross_gmv_fen"]) == (3, 2, 800)
    assert hour["vs_last_year"]["clicks"] == 1.5
    assert v["first_hour"]["vs_last_year"]["orders"] == 2.0
    assert list(v["regions"]) == ["CN-BJ", "unknown", "CN-ZJ"]  # by gross GMV
    assert v["minutes"] == [
        {"minute_ms": t0, "clicks": 3, "orders": 1, "gross_gmv_fen": 500},
        {"minute_ms": t0 + 60_000, "clicks": 0, "orders": 1, "gross_gmv_fen": 300},
    ]
    assert v["brands"][0]["vip_share"] == 0.5


def test_terminal_frame_shows_the_first_hour_regions_and_curve() -> None:
    """`presale top` shows each channel's first hour against last year (+40%
    for 1.4), the regions, the GMV curve and each brand's VIP share."""
    v = view(1)
    v["brands"][0].update(vip_share=0.55, vip_orders=11)
    block = {
        "clicks": 140,
        "carts": 1,
        "orders": 23,
        "gross_gmv_fen": 900,
        "conversion": 0.164,
        "vs_last_year": {
            "clicks": 1.4,
            "orders": 2.3,
            "gross_gmv": None,
            "conversion": 1.15,
        },
    }
    v["first_hour_channels"] = {"livestream": block}
    v["first_hour"] = {**v["first_hour"], **block}
    v["regions"] = {"[b]CN-ZJ": {"gross_gmv_fen": 4_200, "orders": 4, "vip_orders": 1}}
    v["minutes"] = [
        {"minute_ms": T0, "clicks": 1, "orders": 1, "gross_gmv_fen": 100},
        {"minute_ms": T0 + 60_000, "clicks": 1, "orders": 1, "gross_gmv_fen": 800},
    ]
    console = Console(width=160, record=True, color_system=None)
    console.print(frame(v))
    text = console.export_text()
    live = next(line for line in text.splitlines() if "livestream" in line)
    assert "+40%" in live and "2.3x" in live and "+15%" in live and "n/a" in live
    assert "55.0%" in text  # the brand's VIP share
    assert "[b]CN-ZJ" in text and "¥42.00" in text and "25.0%" in text
    assert "▁█" in text and "latest minute ¥8.00" in text
