"""Regions, the first hour by channel, minutes and VIP share (CONTRACT 3, 3b).

Counted in the same atomic step as the rest, once per fresh event. Every case
runs through the production Lua step and the in-memory store
(tests/processors/conftest.py); expected values are worked out by hand.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.processors.make import HOUR_MS, T0, Feed, cancel, cart, click, order, rules

pytestmark = pytest.mark.usefixtures("step_backend")

MIN = 60_000
ZERO_BLOCK = dict.fromkeys(
    (
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
    ),
    0,
)


def block(**counts: int) -> dict[str, int]:
    return {**ZERO_BLOCK, **counts}


def test_regions_count_every_counter_once() -> None:
    """Each fresh event adds to its region's counters and buyers; a duplicate
    adds nothing; an event without a region counts under `unknown`; one region
    met in two minutes of a batch adds both (one field, added twice)."""
    feed = Feed()
    feed.send(
        click("c1", region="ZJ"),
        click("c1", region="ZJ"),  # duplicate
        click("c2", ts=T0 + 2 * MIN, region="ZJ"),
        cart("k1", region="BJ"),
        click("c3"),  # no region
        tp="clicks:0",
    )
    feed.send(
        order("o1", 500, region="ZJ", qty=2, vip=True, user="u1"),
        order("o2", 300, ts=T0 + 2 * HOUR_MS, region="ZJ", user="u2"),
        order("o1", 999, region="ZJ", event_id="again"),  # re-sent order
        cancel("o2", 100, region="ZJ"),
        order("o3", 70, region="BJ", user="u1"),
    )
    regions = feed.state.report["regions"]
    assert regions == {
        "BJ": block(
            carts=1,
            orders=1,
            units=1,
            gross_gmv_fen=70,
            net_gmv_fen=70,
            buyers=1,
            first_hour_gross_gmv_fen=70,
        ),
        "ZJ": block(
            clicks=2,
            orders=2,
            cancels=1,
            units=3,
            gross_gmv_fen=800,
            net_gmv_fen=700,
            vip_orders=1,
            buyers=2,
            first_hour_gross_gmv_fen=500,
        ),
        "unknown": block(clicks=1),
    }


@pytest.mark.parametrize(
    ("batches", "cap", "expected"),
    [
        # under the cap: every region apart
        ([["a", "b"]], 3, {"a": 1, "b": 1}),
        # a third region past a cap of 2 counts under `other`, in batch order
        ([["a", "b", "c", "d"]], 2, {"a": 1, "b": 1, "other": 2}),
        # a region admitted earlier stays itself; a new one goes to `other`
        ([["a", "b"], ["c", "a", "b"]], 2, {"a": 2, "b": 2, "other": 1}),
        # the cap holds across batches: the second batch admits one more
        ([["a"], ["b", "c"]], 2, {"a": 1, "b": 1, "other": 1}),
    ],
)
def test_region_cap(
    batches: list[list[str]], cap: int, expected: dict[str, int]
) -> None:
    """At most PRESALE_MAX_REGIONS regions are kept apart per campaign, decided
    in the atomic step; later new ones count under `other`."""
    feed = Feed(rules(max_regions=cap))
    n = 0
    for regions in batches:
        items = []
        for region in regions:
            n += 1
            items.append(click(f"c{n}", region=region))
        feed.send(*items, tp="clicks:0")
    got = {r: b["clicks"] for r, b in feed.state.report["regions"].items()}
    assert got == expected


def test_a_duplicate_does_not_take_a_region_slot() -> None:
    """A region named only by a duplicate is not admitted: the cap's slots go
    to regions with counted events."""
    feed = Feed(rules(max_regions=2))
    feed.send(click("c1", region="a"), tp="clicks:0")
    feed.send(click("c1", region="z"), click("c2", region="b"), tp="clicks:0")
    feed.send(click("c3", region="c"), tp="clicks:0")
    got = {r: b["clicks"] for r, b in feed.state.report["regions"].items()}
    assert got == {"a": 1, "b": 1, "other": 1}


def first_hour(report: dict[str, Any], channel: str | None = None) -> dict[str, Any]:
    src = report["first_hour"] if channel is None else report["channels"][channel]
    hour = src if channel is None else src["first_hour"]
    keep = ("clicks", "carts", "orders", "gross_gmv_fen", "conversion")
    return {k: hour[k] for k in keep}


def test_first_hour_by_channel() -> None:
    """First-hour clicks, carts, orders and gross GMV per channel and in total:
    events in [T0, T0 + 1 h) only, each once; cancels leave them alone;
    conversion is orders / clicks, 3 decimals."""
    feed = Feed()
    live = {"channel": "livestream", "room_id": "r1"}
    feed.send(
        click("c1", **live),
        click("c2", **live),
        click("c3", **live),
        click("c3", **live),  # duplicate
        click("c4", ts=T0 + HOUR_MS, **live),  # second hour
        click("c5", channel="search"),
        cart("k1", **live),
        tp="clicks:0",
    )
    feed.send(
        order("o1", 500, **live),
        order("o1", 500, event_id="again", **live),
        order("o2", 300, ts=T0 + HOUR_MS - 1, channel="flash_sale"),
        order("o3", 900, ts=T0 + HOUR_MS, **live),  # second hour
        cancel("o1", 500, **live),
    )
    report = feed.state.report
    assert first_hour(report, "livestream") == {
        "clicks": 3,
        "carts": 1,
        "orders": 1,
        "gross_gmv_fen": 500,
        "conversion": 0.333,
    }
    assert first_hour(report, "flash_sale") == {
        "clicks": 0,
        "carts": 0,
        "orders": 1,
        "gross_gmv_fen": 300,
        "conversion": None,
    }
    assert first_hour(report, "search")["clicks"] == 1
    assert first_hour(report) == {
        "clicks": 4,
        "carts": 1,
        "orders": 2,
        "gross_gmv_fen": 800,
        "conversion": 0.5,
    }


@pytest.mark.parametrize(
    ("baseline", "expected"),
    [
        # 3 clicks / 2 = 1.5; 1 order / 1; 500 / 400 = 1.25; (1/3) / (1/2) = 0.667
        (
            {"livestream": (2, 1, 400)},
            {"clicks": 1.5, "orders": 1.0, "gross_gmv": 1.25, "conversion": 0.667},
        ),
        # last year's 0 is no base for a ratio
        (
            {"livestream": (0, 0, 400)},
            {"clicks": None, "orders": None, "gross_gmv": 1.25, "conversion": None},
        ),
        # no clicks under last year's orders: no conversion to compare with
        (
            {"livestream": (0, 1, 0)},
            {"clicks": None, "orders": 1.0, "gross_gmv": None, "conversion": None},
        ),
        # no row for the channel
        (
            {"search": (10, 1, 1)},
            {"clicks": None, "orders": None, "gross_gmv": None, "conversion": None},
        ),
    ],
)
def test_vs_last_year(
    baseline: dict[str, tuple[int, int, int]], expected: dict[str, Any]
) -> None:
    """Each channel's first hour against last year's row of the channel CSV;
    the total against the sum of every row."""
    feed = Feed(rules(channel_baselines=baseline))
    live = {"channel": "livestream", "room_id": "r1"}
    feed.send(*(click(f"c{i}", **live) for i in range(3)), tp="clicks:0")
    feed.send(order("o1", 500, **live))
    report = feed.state.report
    assert report["channels"]["livestream"]["first_hour"]["vs_last_year"] == expected
    clicks, _orders, gross = (sum(v[i] for v in baseline.values()) for i in range(3))
    total = report["first_hour"]["vs_last_year"]
    assert total["clicks"] == (round(3 / clicks, 3) if clicks else None)
    assert total["gross_gmv"] == (round(500 / gross, 3) if gross else None)


def test_minutes() -> None:
    """Per event-time minute, campaign-wide clicks, orders and gross GMV of
    counted events; the latest N minutes with counted events, oldest first.
    A minute with only a cart is listed, with zeros; an out-of-window event
    adds no minute. (T0 is 20 s into its minute: minutes are of the clock.)"""
    m0 = T0 - T0 % MIN  # the minute T0 falls in
    m1 = m0 + MIN
    feed = Feed()
    feed.send(
        click("c1", ts=T0 + 5),
        click("c1", ts=T0 + 5),  # duplicate
        click("c2", ts=m1 + 1),
        click("c3", ts=T0 - 1),  # before the campaign, same minute
        tp="clicks:0",
    )
    feed.send(cart("k1", ts=m0 + 3 * MIN), tp="carts:0")
    feed.send(
        order("o1", 500, ts=m1 - 1),
        order("o2", 200, ts=m1),
        order("o3", 100, ts=m0 + 7 * MIN),
        cancel("o3", 100, ts=m0 + 7 * MIN),
    )
    minutes = feed.report()["minutes"]
    assert minutes == [
        {"minute_ms": m0, "clicks": 1, "orders": 1, "gross_gmv_fen": 500},
        {"minute_ms": m1, "clicks": 1, "orders": 1, "gross_gmv_fen": 200},
        {"minute_ms": m0 + 3 * MIN, "clicks": 0, "orders": 0, "gross_gmv_fen": 0},
        {"minute_ms": m0 + 7 * MIN, "clicks": 0, "orders": 1, "gross_gmv_fen": 100},
    ]
    assert feed.report(minutes=2)["minutes"] == minutes[2:]


@pytest.mark.parametrize(
    ("vips", "expected"),
    [([True, False, False], 0.333), ([True, True], 1.0), ([], None)],
)
def test_vip_share(vips: list[bool], expected: float | None) -> None:
    """A brand's VIP share is vip_orders / orders, 3 decimals; null with no
    orders (a brand with clicks only)."""
    feed = Feed()
    feed.send(click("c1"), tp="clicks:0")
    if vips:
        feed.send(*(order(f"o{i}", 100, vip=v) for i, v in enumerate(vips)))
    (row,) = feed.state.report["brands"]
    assert row["vip_share"] == expected
