"""The reference on tiny hand-written streams, against numbers worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from seeds import reference
from seeds.reference import (
    HOUR_MS,
    Campaign,
    build_report,
    expected_report,
    measure_facts,
    scan_records,
)

START_MS = 1_760_529_600_000
FIRST_HOUR_END_MS = START_MS + HOUR_MS
END_MS = START_MS + 2 * HOUR_MS


def campaign(**changes: Any) -> Campaign:
    settings: dict[str, Any] = {
        "campaign_id": "t",
        "start_ms": START_MS,
        "end_ms": END_MS,
        "milestones_fen": (1_000, 5_000),
        "yoy_min_baseline_fen": 300,
        "baseline_fen": {},
    }
    settings.update(changes)
    return Campaign(**settings)


_ids = iter(range(1, 1_000_000))


def ev(
    event_type: str, ts_ms: int, brand_id: str = "b1", **fields: Any
) -> dict[str, Any]:
    """An event; event_id is fresh unless given."""
    event = {
        "event_id": fields.pop("event_id", f"e{next(_ids)}"),
        "type": event_type,
        "ts": ts_ms,
        "user_id": fields.pop("user_id", "u1"),
        "brand_id": brand_id,
    }
    event.update(fields)
    return event


def order(
    ts_ms: int, order_id: str, amount_fen: int, brand_id: str = "b1", **fields: Any
) -> dict[str, Any]:
    return ev(
        "order", ts_ms, brand_id, order_id=order_id, amount_fen=amount_fen, **fields
    )


def cancel(
    ts_ms: int, order_id: str, amount_fen: int, brand_id: str = "b1", **fields: Any
) -> dict[str, Any]:
    return ev(
        "cancel", ts_ms, brand_id, order_id=order_id, amount_fen=amount_fen, **fields
    )


TOPIC = {"click": "clicks", "cart": "carts", "order": "orders", "cancel": "orders"}


def records(
    *items: dict[str, Any] | tuple[str, bytes],
) -> list[tuple[str, None, bytes]]:
    out = []
    for item in items:
        if isinstance(item, tuple):
            out.append((item[0], None, item[1]))
        else:
            out.append((TOPIC[item["type"]], None, json.dumps(item).encode()))
    return out


def report_of(items: list[Any], **changes: Any) -> dict[str, Any]:
    chosen = campaign(**changes)
    return build_report(scan_records(records(*items), chosen), chosen)


def tally(**counts: int) -> dict[str, int]:
    """The 10 counters, zero unless given."""
    fields = reference.COUNTER_FIELDS
    unknown = set(counts) - set(fields)
    assert not unknown, unknown
    return {name: counts.get(name, 0) for name in fields}


# --------------------------------------------------------------------------
# One stream, the whole report worked out by hand.

S = START_MS
STREAM: list[Any] = [
    ev("click", S, event_id="c1", channel="search"),
    ev("click", S, event_id="c1", channel="search"),  # producer duplicate
    ev("cart", S + 1, event_id="c1", channel="search"),  # same id, other type
    order(S + 10, "o1", 1_500, channel="search", vip=True, qty=2),
    order(S + 10, "o1", 1_500, channel="search", vip=True, qty=2),  # re-sent
    cancel(S + 20, "o2", 400, user_id="u2", channel="livestream", room_id="r1"),
    order(S + 5, "o2", 600, user_id="u2", channel="livestream", room_id="r1"),
    cancel(S + 20, "o2", 400, user_id="u2", channel="livestream", room_id="r1"),
    order(FIRST_HOUR_END_MS, "o3", 700, channel="search"),  # not first hour
    order(FIRST_HOUR_END_MS - 1, "o4", 100, user_id="u3", channel="search"),
    order(S, "o5", 5_000, "b2"),  # channel defaults to other
    order(END_MS - 1, "o6", 9_999, "b3", user_id="u4", channel="store"),
    order(S, "o7", 4_999, "b3", user_id="u4", channel="store"),
    order(END_MS, "o8", 50, "b4"),  # after the end
    ev("click", S - 1, "b4", event_id="c2", channel="detail"),  # before the start
    ev("click", S, "b4", event_id="c2", channel="detail"),  # counts: see above
    order(S - 1, "o9", 200, "b5"),  # before the start
    order(S + 3, "o9", 200, "b5", user_id="u5", channel="recommend", vip=True),
    ("orders", b'{"event_id":"x","type":"order",'),  # invalid_json
    ("orders", json.dumps(ev("click", S, "b1")).encode()),  # topic_mismatch
    order(S, "o10", 2_000, "b6", channel="flash_sale"),
]
BASELINE = {"b1": 1_000, "b2": 299, "b3": 2_500, "b4": 0, "b6": 1_000, "b7": 5}

EXPECTED: dict[str, Any] = {
    "campaign": {
        "id": "t",
        "start_ms": START_MS,
        "end_ms": END_MS,
        "first_hour_end_ms": FIRST_HOUR_END_MS,
    },
    "totals": tally(clicks=2, carts=1, orders=9, cancels=1, units=10,
                    gross_gmv_fen=25_098, net_gmv_fen=24_698, vip_orders=2,
                    buyers=5, first_hour_gross_gmv_fen=14_399),
    "channels": {
        "detail": tally(clicks=1),
        "flash_sale": tally(orders=1, units=1, gross_gmv_fen=2_000, net_gmv_fen=2_000,
                            buyers=1, first_hour_gross_gmv_fen=2_000),
        "livestream": tally(orders=1, cancels=1, units=1, gross_gmv_fen=600,
                            net_gmv_fen=200, buyers=1, first_hour_gross_gmv_fen=600),
        "other": tally(orders=1, units=1, gross_gmv_fen=5_000, net_gmv_fen=5_000,
                       buyers=1, first_hour_gross_gmv_fen=5_000),
        "recommend": tally(orders=1, units=1, gross_gmv_fen=200, net_gmv_fen=200,
                           vip_orders=1, buyers=1, first_hour_gross_gmv_fen=200),
        "search": tally(clicks=1, carts=1, orders=3, units=4, gross_gmv_fen=2_300,
                        net_gmv_fen=2_300, vip_orders=1, buyers=2,
                        first_hour_gross_gmv_fen=1_600),
        "store": tally(orders=2, units=2, gross_gmv_fen=14_998, net_gmv_fen=14_998,
                       buyers=1, first_hour_gross_gmv_fen=4_999),
    },
    "first_hour": {"brands_reached": {"1000": 4, "5000": 1}, "brands_doubled": 2},
    "brands": [
        {"brand_id": "b3",
         **tally(orders=2, units=2, gross_gmv_fen=14_998, net_gmv_fen=14_998,
                 buyers=1, first_hour_gross_gmv_fen=4_999),
         "baseline_first_hour_gmv_fen": 2_500,
         "by_channel": {"store": tally(orders=2, units=2, gross_gmv_fen=14_998,
                                       net_gmv_fen=14_998, buyers=1,
                                       first_hour_gross_gmv_fen=4_999)}},
        {"brand_id": "b2",
         **tally(orders=1, units=1, gross_gmv_fen=5_000, net_gmv_fen=5_000, buyers=1,
                 first_hour_gross_gmv_fen=5_000),
         "baseline_first_hour_gmv_fen": 299,
         "by_channel": {"other": tally(orders=1, units=1, gross_gmv_fen=5_000,
                                       net_gmv_fen=5_000, buyers=1,
                                       first_hour_gross_gmv_fen=5_000)}},
        {"brand_id": "b1",
         **tally(clicks=1, carts=1, orders=4, cancels=1, units=5, gross_gmv_fen=2_900,
                 net_gmv_fen=2_500, vip_orders=1, buyers=3,
                 first_hour_gross_gmv_fen=2_200),
         "baseline_first_hour_gmv_fen": 1_000,
         "by_channel": {
             "livestream": tally(orders=1, cancels=1, units=1, gross_gmv_fen=600,
                                 net_gmv_fen=200, buyers=1,
                                 first_hour_gross_gmv_fen=600),
             "search": tally(clicks=1, carts=1, orders=3, units=4, gross_gmv_fen=2_300,
                             net_gmv_fen=2_300, vip_orders=1, buyers=2,
                             first_hour_gross_gmv_fen=1_600)}},
        {"brand_id": "b6",
         **tally(orders=1, units=1, gross_gmv_fen=2_000, net_gmv_fen=2_000, buyers=1,
                 first_hour_gross_gmv_fen=2_000),
         "baseline_first_hour_gmv_fen": 1_000,
         "by_channel": {"flash_sale": tally(orders=1, units=1, gross_gmv_fen=2_000,
                                            net_gmv_fen=2_000, buyers=1,
                                            first_hour_gross_gmv_fen=2_000)}},
        {"brand_id": "b5",
         **tally(orders=1, units=1, gross_gmv_fen=200, net_gmv_fen=200, vip_orders=1,
                 buyers=1, first_hour_gross_gmv_fen=200),
         "baseline_first_hour_gmv_fen": 0,
         "by_channel": {"recommend": tally(orders=1, units=1, gross_gmv_fen=200,
                                           net_gmv_fen=200, vip_orders=1, buyers=1,
                                           first_hour_gross_gmv_fen=200)}},
        {"brand_id": "b4", **tally(clicks=1), "baseline_first_hour_gmv_fen": 0,
         "by_channel": {"detail": tally(clicks=1)}},
    ],
    # crossed_at_ms: the event time of the order whose running total, in
    # arrival order, first reached the threshold. b1's first-hour orders arrive
    # o1 (1,500 at S+10), o2 (600 at S+5), o4: 1,000 is reached by o1, its
    # doubled baseline 2,000 by o2 (2,100).
    "milestones": [
        {"kind": "gmv_threshold", "brand_id": "b1", "threshold_fen": 1_000,
         "crossed_at_ms": S + 10},
        {"kind": "gmv_threshold", "brand_id": "b2", "threshold_fen": 1_000,
         "crossed_at_ms": S},
        {"kind": "gmv_threshold", "brand_id": "b2", "threshold_fen": 5_000,
         "crossed_at_ms": S},
        {"kind": "gmv_threshold", "brand_id": "b3", "threshold_fen": 1_000,
         "crossed_at_ms": S},
        {"kind": "gmv_threshold", "brand_id": "b6", "threshold_fen": 1_000,
         "crossed_at_ms": S},
        {"kind": "yoy_double", "brand_id": "b1", "threshold_fen": 2_000,
         "crossed_at_ms": S + 5},
        {"kind": "yoy_double", "brand_id": "b6", "threshold_fen": 2_000,
         "crossed_at_ms": S},
    ],
    "dead_letters": 2,
    "dead_letters_by_reason": {"invalid_json": 1, "topic_mismatch": 1},
    "out_of_window": 3,
    "late": 0,
}  # fmt: skip


def fh(
    clicks: int = 0,
    carts: int = 0,
    orders: int = 0,
    gross: int = 0,
    conversion: float | None = None,
    vs: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    """A first-hour block (CONTRACT 3b); no channel CSV: every ratio null."""
    return {
        "clicks": clicks,
        "carts": carts,
        "orders": orders,
        "gross_gmv_fen": gross,
        "conversion": conversion,
        "vs_last_year": vs or dict.fromkeys(("clicks", "orders", "gross_gmv",
                                             "conversion")),
    }  # fmt: skip


# CONTRACT 3b, by hand. First hour [S, S + 1 h): clicks c1 (search) and c2
# (detail), the cart, orders o1 1,500, o2 600, o4 100, o5 5,000, o7 4,999,
# o9 200, o10 2,000: 7 orders, 14,399 fen; conversion 7 / 2.
for _channel, _block in {
    "detail": fh(clicks=1, conversion=0.0),
    "flash_sale": fh(orders=1, gross=2_000),
    "livestream": fh(orders=1, gross=600),
    "other": fh(orders=1, gross=5_000),
    "recommend": fh(orders=1, gross=200),
    "search": fh(clicks=1, carts=1, orders=2, gross=1_600, conversion=2.0),
    "store": fh(orders=1, gross=4_999),
}.items():
    EXPECTED["channels"][_channel]["first_hour"] = _block
EXPECTED["first_hour"].update(fh(2, 1, 7, 14_399, 3.5))
# No event names a region: every counted event is `unknown`.
EXPECTED["regions"] = {"unknown": EXPECTED["totals"]}
# S is a whole minute: c1, the cart, o1, o2, o5, o7, c2, o9, o10 and o2's
# cancel fall in it; o4 in the first hour's last minute, o3 in the next, o6 in
# the campaign's last.
EXPECTED["minutes"] = [
    {"minute_ms": S, "clicks": 2, "orders": 6, "gross_gmv_fen": 14_299},
    {"minute_ms": FIRST_HOUR_END_MS - 60_000, "clicks": 0, "orders": 1,
     "gross_gmv_fen": 100},
    {"minute_ms": FIRST_HOUR_END_MS, "clicks": 0, "orders": 1, "gross_gmv_fen": 700},
    {"minute_ms": END_MS - 60_000, "clicks": 0, "orders": 1, "gross_gmv_fen": 9_999},
]  # fmt: skip
# vip_orders / orders: b1 1 of 4; b5 1 of 1; b4 has no orders.
for _row in EXPECTED["brands"]:
    _row["vip_share"] = {"b1": 0.25, "b5": 1.0, "b4": None}.get(_row["brand_id"], 0.0)


def test_hand_computed_report() -> None:
    """Dedupe, cancel before its order, window edges, defaults, milestones and
    sorting, all in one stream whose report was worked out by hand."""
    assert report_of(STREAM, baseline_fen=BASELINE) == EXPECTED


def test_report_does_not_depend_on_arrival_order() -> None:
    """Where duplicates are identical (as in recordings), any arrival order
    gives the same report: here, the stream reversed."""
    identical = [
        item for item in STREAM if not isinstance(item, dict) or item["ts"] >= S
    ]
    forward = report_of(identical, baseline_fen=BASELINE)
    backward = report_of(identical[::-1], baseline_fen=BASELINE)
    # All but crossed_at_ms, which is the arrival order's by the contract.
    for report in (forward, backward):
        for m in report["milestones"]:
            del m["crossed_at_ms"]
    assert forward == backward


def test_expected_report_from_files(tmp_path: Path) -> None:
    """expected_report reads a recording and a settings mapping whose baseline
    CSV path is relative to the settings directory."""
    lines = []
    for item in STREAM:
        if isinstance(item, tuple):
            topic, value = item
            lines.append(json.dumps({"topic": topic, "raw": value.decode()}))
        else:
            lines.append(json.dumps(item))
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "conf").mkdir()
    csv_rows = ["brand_id,first_hour_gmv_fen"] + [
        f"{b},{v}" for b, v in BASELINE.items()
    ]
    (tmp_path / "conf" / "base.csv").write_text("\n".join(csv_rows) + "\n")
    settings = {
        "PRESALE_CAMPAIGN_ID": "t",
        "PRESALE_CAMPAIGN_START_MS": str(START_MS),
        "PRESALE_CAMPAIGN_END_MS": str(END_MS),
        "PRESALE_MILESTONES_FEN": "5000,1000",
        "PRESALE_YOY_MIN_BASELINE_FEN": "300",
        "PRESALE_BASELINE_CSV": "base.csv",
    }
    got = expected_report(
        tmp_path / "t.jsonl", settings, settings_dir=tmp_path / "conf"
    )
    assert got == EXPECTED


# --------------------------------------------------------------------------
# Window edges


@pytest.mark.parametrize(
    ("ts_ms", "counted", "first_hour"),
    [
        (START_MS - 1, False, False),
        (START_MS, True, True),
        (FIRST_HOUR_END_MS - 1, True, True),
        (FIRST_HOUR_END_MS, True, False),
        (END_MS - 1, True, False),
        (END_MS, False, False),
        (END_MS + 1, False, False),
    ],
)
def test_window_edges(ts_ms: int, counted: bool, first_hour: bool) -> None:
    """[start, end) is counted, [start, start + 1 h) is the first hour."""
    got = report_of([order(ts_ms, "o1", 700), ev("click", ts_ms)])
    assert got["totals"]["orders"] == int(counted)
    assert got["totals"]["clicks"] == int(counted)
    assert got["totals"]["first_hour_gross_gmv_fen"] == (700 if first_hour else 0)
    assert got["out_of_window"] == (0 if counted else 2)
    assert len(got["brands"]) == int(counted)


# --------------------------------------------------------------------------
# Dedupe


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        pytest.param(
            [ev("click", S, event_id="a"), ev("click", S + 9, event_id="a")],
            tally(clicks=1),
            id="click once per event_id",
        ),
        pytest.param(
            [ev("click", S, event_id="a"), ev("cart", S, event_id="a")],
            tally(clicks=1, carts=1),
            id="click and cart ids are separate",
        ),
        pytest.param(
            [ev("cart", S, event_id="a", qty=3), ev("cart", S, event_id="b", qty=3)],
            tally(carts=2),
            id="carts by event_id, qty not in units",
        ),
        pytest.param(
            [order(S, "o", 500), order(S, "o", 500), order(S, "o", 500)],
            tally(orders=1, units=1, gross_gmv_fen=500, net_gmv_fen=500, buyers=1,
                  first_hour_gross_gmv_fen=500),
            id="order once per order_id",
        ),
        pytest.param(
            [order(S, "o", 500, event_id="x"), order(S, "p", 300, event_id="x")],
            tally(orders=2, units=2, gross_gmv_fen=800, net_gmv_fen=800, buyers=1,
                  first_hour_gross_gmv_fen=800),
            id="orders are not deduped by event_id",
        ),
        pytest.param(
            [cancel(S + 1, "o", 500), order(S, "o", 500)],
            tally(orders=1, cancels=1, units=1, gross_gmv_fen=500, buyers=1,
                  first_hour_gross_gmv_fen=500),
            id="cancel before its order",
        ),
        pytest.param(
            [order(S, "o", 500), cancel(S + 1, "o", 200), cancel(S + 1, "o", 200)],
            tally(orders=1, cancels=1, units=1, gross_gmv_fen=500, net_gmv_fen=300,
                  buyers=1, first_hour_gross_gmv_fen=500),
            id="cancel once per order_id, partial amount",
        ),
        pytest.param(
            [cancel(S, "never-ordered", 100)],
            tally(cancels=1, net_gmv_fen=-100),
            id="cancel without an order still counts",
        ),
        pytest.param(
            [order(S - 1, "o", 500), order(S, "o", 500)],
            tally(orders=1, units=1, gross_gmv_fen=500, net_gmv_fen=500, buyers=1,
                  first_hour_gross_gmv_fen=500),
            id="out-of-window order takes no part in dedupe",
        ),
        pytest.param(
            [order(S, "o", 500), cancel(END_MS, "o", 500)],
            tally(orders=1, units=1, gross_gmv_fen=500, net_gmv_fen=500, buyers=1,
                  first_hour_gross_gmv_fen=500),
            id="cancel after the end is not counted",
        ),
        pytest.param(
            [order(S, "o1", 100, qty=4, vip=True, user_id="u1"),
             order(S, "o2", 100, vip=False, user_id="u1"),
             order(S, "o3", 100, user_id="u2")],
            tally(orders=3, units=6, gross_gmv_fen=300, net_gmv_fen=300, vip_orders=1,
                  buyers=2, first_hour_gross_gmv_fen=300),
            id="units, vip orders, distinct buyers",
        ),
    ],
)  # fmt: skip
def test_dedupe(stream: list[dict[str, Any]], expected: dict[str, int]) -> None:
    """Every fact is counted once, per the keys of CONTRACT section 3."""
    assert report_of(stream)["totals"] == expected


# --------------------------------------------------------------------------
# Milestones


@pytest.mark.parametrize(
    ("first_hour_fen", "baseline_fen", "floor_fen", "milestones"),
    [
        (999, None, 300, []),
        (1_000, None, 300, [("gmv_threshold", 1_000)]),
        (5_000, None, 300, [("gmv_threshold", 1_000), ("gmv_threshold", 5_000)]),
        (600, 300, 300, [("yoy_double", 600)]),  # baseline == floor, gross == 2x
        (599, 300, 300, []),
        (600, 299, 300, []),  # below the floor
        (100, 0, 0, []),  # a zero baseline never fires
        (
            2_000,
            1_000,
            300,
            [("gmv_threshold", 1_000), ("yoy_double", 2_000)],
        ),
    ],
)
def test_milestones(
    first_hour_fen: int,
    baseline_fen: int | None,
    floor_fen: int,
    milestones: list[tuple[str, int]],
) -> None:
    """Thresholds fire at >=; yoy_double at gross >= 2x a baseline >= floor."""
    baseline = {} if baseline_fen is None else {"b1": baseline_fen}
    got = report_of(
        [order(S, "o1", first_hour_fen), order(FIRST_HOUR_END_MS, "o2", 10_000)],
        baseline_fen=baseline,
        yoy_min_baseline_fen=floor_fen,
    )
    assert [(m["kind"], m["threshold_fen"]) for m in got["milestones"]] == milestones
    assert got["first_hour"]["brands_doubled"] == sum(
        1 for kind, _ in milestones if kind == "yoy_double"
    )


def test_brands_sorted_by_gross_then_id() -> None:
    """Highest gross first; ties by brand_id; brands with only clicks listed."""
    got = report_of(
        [
            order(S, "o1", 100, "bb"),
            order(S, "o2", 100, "ba"),
            order(S, "o3", 900, "bz"),
            ev("click", S, "aa"),
        ]
    )
    assert [row["brand_id"] for row in got["brands"]] == ["bz", "ba", "bb", "aa"]


def test_measure_facts() -> None:
    """Room traffic, flash-sale orders, conversion and the flagship brand's vip
    share: every sku of `apple` counts, each order once, and no other brand."""
    stream = [
        ev("click", S, channel="livestream", room_id="r1"),
        ev("click", S, channel="livestream", room_id="r1"),
        ev("click", S, channel="livestream", room_id="r2"),
        ev("click", FIRST_HOUR_END_MS, channel="livestream", room_id="r3"),
        ev("click", S, channel="search"),
        order(S, "o1", 1, "apple", sku_id="iphone17-pro", vip=True),
        order(S, "o2", 1, "apple", sku_id="iphone17-pro"),
        order(S, "o2", 1, "apple", sku_id="iphone17-pro"),
        order(S, "o3", 1, "apple", sku_id="iphone17"),
        order(S, "o4", 1, channel="flash_sale", vip=True),
        order(END_MS, "o5", 1, channel="flash_sale"),
        order(END_MS, "o6", 1, "apple", sku_id="iphone17-pro", vip=True),
    ]
    chosen = campaign()
    facts = measure_facts(scan_records(records(*stream), chosen), chosen)
    assert facts["first_hour_livestream_clicks"] == 3
    assert facts["first_hour_livestream_rooms"] == 2
    assert facts["first_hour_livestream_clicks_per_room"] == 1.5
    assert facts["campaign_flash_sale_orders"] == 1
    assert (facts["campaign_orders"], facts["campaign_clicks"]) == (4, 5)
    assert facts["campaign_conversion"] == 0.8
    assert facts["flagship_brand_id"] == "apple"
    assert (facts["flagship_orders"], facts["flagship_vip_orders"]) == (3, 1)
    assert facts["flagship_vip_share"] == 1 / 3


# --------------------------------------------------------------------------
# A campaign of days: dedupe lifetimes and the watermark


def test_reference_dedupe_for_a_campaign_of_days() -> None:
    """Worked by hand over a 5-day campaign with a 24 h horizon: the first hour
    published again on day 3 adds no order and no cancel (kept for the
    campaign's life) and its 2 clicks are late (more than 24 h behind the
    watermark, day 3); one click stamped on the last day, early, neither moves
    the watermark nor makes the day-1 clicks late."""
    day = 24 * HOUR_MS
    first_hour = [
        ev("click", S + 1, event_id="k1"),
        ev("click", S + 2, event_id="k2"),
        order(S + 3, "o1", 700),
        cancel(S + 4, "o1", 200),
    ]
    stream = [
        *first_hour,
        ev("click", S + 5 * day - 1, event_id="ahead"),  # a clock days ahead
        *(ev("click", S + day + i, event_id=f"d1-{i}") for i in range(3)),
        *(ev("click", S + 3 * day + i, event_id=f"d3-{i}") for i in range(70)),
        *first_hour,  # the first hour again, on day 3
    ]
    got = report_of(stream, end_ms=S + 5 * day)
    assert got["late"] == 2
    assert got["totals"]["clicks"] == 2 + 1 + 3 + 70
    assert (got["totals"]["orders"], got["totals"]["cancels"]) == (1, 1)
    assert got["totals"]["net_gmv_fen"] == 500
    assert [m["threshold_fen"] for m in got["milestones"]] == []


def test_reference_defaults_are_the_workers() -> None:
    """Settings without a YoY floor or a horizon take the worker's defaults:
    1,000,000 fen and 24 h."""
    chosen = reference.campaign_from_settings(
        {
            "PRESALE_CAMPAIGN_ID": "t",
            "PRESALE_CAMPAIGN_START_MS": "0",
            "PRESALE_CAMPAIGN_END_MS": "1",
        }
    )
    assert (chosen.yoy_min_baseline_fen, chosen.dedupe_horizon_ms) == (
        1_000_000,
        86_400_000,
    )


# --------------------------------------------------------------------------
# CONTRACT 3 and 3b: regions, last year per channel


@pytest.mark.parametrize(
    ("regions", "cap", "expected"),
    [
        (["a", "b", "a"], 64, {"a": 2, "b": 1}),
        # the first 2 distinct regions in arrival order keep their name
        (["a", "b", "c", "a", "d"], 2, {"a": 2, "b": 1, "other": 2}),
        (["x", None, "y"], 2, {"unknown": 1, "x": 1, "other": 1}),
    ],
)
def test_regions_and_their_cap(
    regions: list[str | None], cap: int, expected: dict[str, int]
) -> None:
    """Counted clicks by region, `unknown` without one, past the cap `other`."""
    items = [
        ev("click", S, **({"region": r} if r is not None else {})) for r in regions
    ]
    got = report_of(items, max_regions=cap)["regions"]
    assert {name: block["clicks"] for name, block in got.items()} == expected


def test_channel_baseline_csv(tmp_path: Path) -> None:
    """Last year's first hour per channel from PRESALE_CHANNEL_BASELINE_CSV
    (beside the settings): livestream 5 clicks, 4 orders, 400 fen last year
    against 7 clicks, 2 orders, 1,000 fen now -> 1.4, 0.5, 2.5 and conversion
    (2/7) / (4/5) = 0.357; the total's last year is the sum of the rows."""
    live = {"channel": "livestream", "room_id": "r1"}
    items = [ev("click", S + i, **live) for i in range(7)]
    items += [order(S, "o1", 400, **live), order(S, "o2", 600, **live)]
    items.append(ev("click", S, channel="search"))
    lines = [json.dumps(item) for item in items]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "ch.csv").write_text(
        "channel,first_hour_clicks,first_hour_orders,first_hour_gross_gmv_fen\n"
        "livestream,5,4,400\nsearch,0,1,100\n"
    )
    settings = {
        "PRESALE_CAMPAIGN_ID": "t",
        "PRESALE_CAMPAIGN_START_MS": str(START_MS),
        "PRESALE_CAMPAIGN_END_MS": str(END_MS),
        "PRESALE_CHANNEL_BASELINE_CSV": "ch.csv",
    }
    got = expected_report(tmp_path / "t.jsonl", settings)
    assert got["channels"]["livestream"]["first_hour"]["vs_last_year"] == {
        "clicks": 1.4,
        "orders": 0.5,
        "gross_gmv": 2.5,
        "conversion": 0.357,
    }
    # search: no clicks last year, 0 orders now against 1
    assert got["channels"]["search"]["first_hour"]["vs_last_year"] == {
        "clicks": None,
        "orders": 0.0,
        "gross_gmv": 0.0,
        "conversion": None,
    }
    # total: 8 clicks / 5, 2 orders / 5, 1,000 / 500, (2/8) / (5/5)
    assert got["first_hour"]["vs_last_year"] == {
        "clicks": 1.6,
        "orders": 0.4,
        "gross_gmv": 2.0,
        "conversion": 0.25,
    }
