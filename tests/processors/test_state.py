"""The atomic step: dedupe, windows, offsets, milestones, generations.

Every case runs twice (tests/processors/conftest.py): through the production
Lua script (`streams/lua/apply.lua`) in a Redis of the session's own, and
through the in-memory store the worker's unit tests use, read back the same way.
"""

from __future__ import annotations

import pytest

from processors.counting import Record
from processors.events import Rejection
from processors.milestones import GMV_THRESHOLD, YOY_DOUBLE, Milestone
from processors.state import Applied, Stale
from tests.processors.make import (
    END,
    HOUR_MS,
    T0,
    Feed,
    cancel,
    cart,
    click,
    order,
    rules,
)

pytestmark = pytest.mark.usefixtures("step_backend")

# ---------------------------------------------------------------------------
# deduplication


def test_click_dedupe_by_event_id() -> None:
    """Clicks count once per event_id, within a batch and across batches."""
    feed = Feed()
    first = feed.send(click("e1"), click("e1"), click("e2"), tp="clicks:0")
    second = feed.send(click("e2"), click("e3"), tp="clicks:1")
    assert feed.brand()["clicks"] == 3  # e1, e2, e3
    assert feed.state.totals["clicks"] == 3
    assert (first.new_events, first.duplicates) == (2, 1)
    assert (second.new_events, second.duplicates) == (1, 1)


def test_cart_dedupe_by_event_id() -> None:
    """Carts count once per event_id, whatever partition the copy lands on."""
    feed = Feed()
    feed.send(cart("k1"), cart("k2"), tp="carts:0")
    feed.send(cart("k1"), tp="carts:5")
    assert feed.brand()["carts"] == 2


def test_click_and_cart_sharing_an_event_id_both_count() -> None:
    """Click and cart dedupe in separate spaces: one id used by both counts once
    as a click and once as a cart."""
    feed = Feed()
    feed.send(click("same"), tp="clicks:0")
    feed.send(cart("same"), tp="carts:0")
    assert (feed.brand()["clicks"], feed.brand()["carts"]) == (1, 1)


def test_order_dedupe_by_order_id() -> None:
    """A re-sent order with a new event_id is the same order: counted once, with
    the values of the copy that arrived first."""
    feed = Feed()
    feed.send(order("o1", 500, event_id="e1", qty=2))
    applied = feed.send(order("o1", 700, event_id="e2", qty=9))
    b = feed.brand()
    assert (b["orders"], b["units"], b["gross_gmv_fen"], b["net_gmv_fen"]) == (
        1,
        2,
        500,
        500,
    )
    assert (applied.new_events, applied.duplicates) == (0, 1)


def test_order_dedupe_within_a_batch() -> None:
    """Two copies of one order in the same batch count once."""
    feed = Feed()
    feed.send(order("o1", 500, event_id="e1"), order("o1", 500, event_id="e2"))
    assert (feed.brand()["orders"], feed.brand()["gross_gmv_fen"]) == (1, 500)


def test_cancel_dedupe_by_order_id() -> None:
    """A cancel sent twice (new event_id each time) takes its amount back once."""
    feed = Feed()
    feed.send(order("o1", 500))
    feed.send(cancel("o1", 200, event_id="x1"))
    feed.send(cancel("o1", 200, event_id="x2"), cancel("o1", 200, event_id="x3"))
    b = feed.brand()
    assert (b["orders"], b["cancels"], b["gross_gmv_fen"], b["net_gmv_fen"]) == (
        1,
        1,
        500,
        300,
    )


@pytest.mark.parametrize("same_batch", [False, True])
def test_cancel_before_its_order(same_batch: bool) -> None:
    """A cancel arriving before its order is kept: both count, and net is gross
    minus the cancelled amount (500 - 200 = 300)."""
    feed = Feed()
    if same_batch:
        feed.send(cancel("o1", 200), order("o1", 500))
    else:
        feed.send(cancel("o1", 200))
        feed.send(order("o1", 500))
    b = feed.brand()
    assert (b["orders"], b["cancels"], b["gross_gmv_fen"], b["net_gmv_fen"]) == (
        1,
        1,
        500,
        300,
    )
    assert feed.state.totals["net_gmv_fen"] == 300


def test_order_counters() -> None:
    """units sum qty, vip_orders count vip orders, buyers are distinct user_ids
    with an order: qty 3+2+1 = 6 units, 1 vip order, buyers {u1, u2}."""
    feed = Feed()
    feed.send(
        order("o1", 100, qty=3, vip=True, user="u1"),
        order("o2", 200, qty=2, user="u2"),
        order("o3", 300, user="u1"),
        click("c1", user="u3"),  # a click makes no buyer
    )
    b = feed.brand()
    assert (b["orders"], b["units"], b["vip_orders"], b["gross_gmv_fen"]) == (
        3,
        6,
        1,
        600,
    )
    assert feed.state.buyers[("b1",)] == 2
    assert feed.state.buyers[()] == 2


def test_brand_and_channel_split() -> None:
    """Counts land per brand, per brand and channel, per channel and in the
    totals, each the sum of its own events."""
    feed = Feed()
    feed.send(
        order("o1", 100, brand="b1", channel="search"),
        order("o2", 200, brand="b1", channel="livestream", room_id="r1"),
        order("o3", 400, brand="b2", channel="search", user="u2"),
        click("c1", brand="b2", channel="detail"),
    )
    s = feed.state
    assert s.brands["b1"]["gross_gmv_fen"] == 300
    assert s.brands["b2"]["gross_gmv_fen"] == 400
    assert s.brand_channels[("b1", "search")]["gross_gmv_fen"] == 100
    assert s.brand_channels[("b1", "livestream")]["gross_gmv_fen"] == 200
    assert s.brand_channels[("b2", "search")]["gross_gmv_fen"] == 400
    assert s.brand_channels[("b2", "detail")]["clicks"] == 1
    assert s.channels["search"]["gross_gmv_fen"] == 500
    assert s.channels["search"]["orders"] == 2
    assert s.totals["gross_gmv_fen"] == 700
    assert s.buyers[("", "search")] == 2
    assert s.buyers[("b1", "livestream")] == 1


# ---------------------------------------------------------------------------
# the campaign window and the first hour


@pytest.mark.parametrize(
    ("ts", "counted"),
    [
        (T0 - 1, False),
        (T0, True),
        (T0 + 1, True),
        (END - 1, True),
        (END, False),
        (END + 1, False),
        (0, False),
    ],
)
@pytest.mark.parametrize("kind", ["click", "order"])
def test_campaign_window(kind: str, ts: int, counted: bool) -> None:
    """Events in [start_ms, end_ms) are counted; others only raise out_of_window
    (start is inside, end is outside)."""
    feed = Feed()
    event = click("e1", ts=ts) if kind == "click" else order("o1", 100, ts=ts)
    applied = feed.send(event)
    field = "clicks" if kind == "click" else "orders"
    assert feed.state.totals[field] == int(counted)
    assert feed.state.out_of_window == int(not counted)
    assert applied.new_events == int(counted)
    assert feed.state.offsets["orders:0"] == 0  # the offset moves on either way


def test_out_of_window_does_not_move_the_watermark() -> None:
    """Only counted events move the watermark: a far-future event outside the
    window leaves it where it was."""
    feed = Feed()
    feed.send(*(click(f"e{i}", ts=T0 + 5) for i in range(16)))
    feed.send(*(click(f"f{i}", ts=T0 + 5) for i in range(16)))
    feed.send(*(click(f"g{i}", ts=END + 10 * HOUR_MS) for i in range(32)))
    assert feed.state.watermark_ms == T0 + 5


@pytest.mark.parametrize(
    ("ts", "first_hour"),
    [
        (T0, True),
        (T0 + HOUR_MS - 1, True),
        (T0 + HOUR_MS, False),
        (T0 + HOUR_MS + 1, False),
    ],
)
def test_first_hour_edge(ts: int, first_hour: bool) -> None:
    """The first hour is [T0, T0 + 3,600,000): an order at T0+3,599,999 adds to
    first_hour_gross_gmv_fen, one at T0+3,600,000 only to gross."""
    feed = Feed()
    feed.send(order("o1", 700, ts=ts))
    b = feed.brand()
    assert b["gross_gmv_fen"] == 700
    assert b["first_hour_gross_gmv_fen"] == (700 if first_hour else 0)
    assert (
        feed.state.totals["first_hour_gross_gmv_fen"] == b["first_hour_gross_gmv_fen"]
    )


# ---------------------------------------------------------------------------
# offsets and stale plans


def test_records_at_or_below_the_applied_offset_are_skipped() -> None:
    """With offset 2 applied, a batch of offsets 0..5 counts only 3, 4 and 5."""
    feed = Feed()
    feed.set_offsets({"clicks:0": 2})
    records: list[Record] = [("clicks:0", i, click(f"e{i}")) for i in range(6)]
    result = feed.apply_records(records)
    assert isinstance(result, Applied)
    assert result.new_events == 3
    assert feed.brand()["clicks"] == 3
    assert feed.state.offsets == {"clicks:0": 5}


@pytest.mark.parametrize(
    ("stored", "planned_from", "moved"),
    [
        ({"orders:0": 7}, {"orders:0": 5}, ("orders:0", 7)),
        ({}, {"orders:0": 5}, ("orders:0", -1)),
        ({"orders:0": 3}, {"orders:0": 5}, ("orders:0", 3)),
        ({"orders:0": 2}, {}, ("orders:0", 2)),
    ],
)
def test_stale_plan_changes_nothing(
    stored: dict[str, int], planned_from: dict[str, int], moved: tuple[str, int]
) -> None:
    """When the stored offset differs from the one the plan was built on, apply
    returns Stale(partition, stored offset) and leaves the state untouched."""
    campaign = rules()
    feed = Feed(campaign)
    feed.send(order("o0", 100), click("c0"), tp="other:0")
    feed.set_offsets(stored)
    before = feed.snapshot()
    first = planned_from.get("orders:0", -1) + 1
    records: list[Record] = [
        ("orders:0", first, order("o1", 1_000)),
        ("orders:0", first + 1, Rejection("bad_value", "x")),
        ("orders:0", first + 2, order("o2", 5, ts=END)),
    ]
    plan = feed.plan(records, planned_from)
    assert feed.apply(plan) == Stale(*moved)
    assert feed.snapshot() == before


def test_one_stale_partition_refuses_the_whole_plan() -> None:
    """A plan over two partitions, one of them stale, applies nothing at all."""
    campaign = rules()
    feed = Feed(campaign)
    feed.set_offsets({"orders:0": 4, "orders:1": 9})
    records: list[Record] = [
        ("orders:0", 5, order("o1", 100)),
        ("orders:1", 9, order("o2", 100)),
    ]
    plan = feed.plan(records, {"orders:0": 4, "orders:1": 8})
    before = feed.snapshot()
    assert feed.apply(plan) == Stale("orders:1", 9)
    assert feed.snapshot() == before


def test_a_plan_past_a_hole_is_refused() -> None:
    """Hole c: the store refuses a plan that does not begin right after its
    stored offset (a zombie worker's batch after the store lost another
    worker's step), so records 1..4 can never be skipped."""
    feed = Feed()
    feed.set_offsets({"orders:0": 0})
    records: list[Record] = [("orders:0", 5, order("o5", 100))]
    before = feed.snapshot()
    assert feed.apply_records(records) == Stale("orders:0", 0)
    assert feed.snapshot() == before


# ---------------------------------------------------------------------------
# rejections


def test_rejections_counted_per_reason() -> None:
    """Rejected records are counted per reason, across batches, and their offsets
    are applied like any other record's."""
    feed = Feed()
    feed.send(
        Rejection("bad_value", "a"),
        click("e1"),
        Rejection("bad_value", "b"),
        Rejection("invalid_json", "c"),
        tp="clicks:0",
    )
    feed.send(Rejection("too_large", "d"), Rejection("bad_value", "e"), tp="clicks:0")
    assert feed.state.dead_letters == {
        "bad_value": 3,
        "invalid_json": 1,
        "too_large": 1,
    }
    assert feed.state.offsets == {"clicks:0": 5}
    assert feed.state.totals["clicks"] == 1


# ---------------------------------------------------------------------------
# milestones


def _kinds(milestones: list[Milestone]) -> list[tuple[str, int, int]]:
    return [(m.kind, m.threshold_fen, m.crossed_at_ms) for m in milestones]


def test_threshold_crossed_once_across_batches() -> None:
    """A threshold fires in the batch that reaches it, at the event time of the
    order that reached it in arrival order (400+400+400: the third, ts T0+20, not
    the latest ts T0+30), and never again as later batches push the total on."""
    feed = Feed()
    first = feed.send(
        order("o1", 400, ts=T0 + 30),
        order("o2", 400, ts=T0 + 10),
        order("o3", 400, ts=T0 + 20),
        now_ms=111,
    )
    assert _kinds(first.milestones) == [(GMV_THRESHOLD, 1_000, T0 + 20)]
    assert first.milestones[0].detected_at_ms == 111
    assert first.milestones[0].brand_id == "b1"
    assert feed.send(order("o4", 300, ts=T0 + 40)).milestones == []  # 1,500
    third = feed.send(order("o5", 3_500, ts=T0 + 50))  # 5,000 exactly
    assert _kinds(third.milestones) == [(GMV_THRESHOLD, 5_000, T0 + 50)]
    assert feed.send(order("o6", 10_000, ts=T0 + 60)).milestones == []
    assert sorted(feed.state.milestones) == [
        "gmv_threshold:b1:1000",
        "gmv_threshold:b1:5000",
    ]


def test_one_order_crosses_two_thresholds() -> None:
    """One order taking the total from 0 to 6,000 reaches both 1,000 and 5,000,
    each with that order's time."""
    feed = Feed()
    applied = feed.send(order("o1", 6_000, ts=T0 + 9))
    assert _kinds(applied.milestones) == [
        (GMV_THRESHOLD, 1_000, T0 + 9),
        (GMV_THRESHOLD, 5_000, T0 + 9),
    ]


@pytest.mark.parametrize(
    ("amounts", "reached"),
    [([999], False), ([1_000], True), ([999, 1], True), ([500, 499], False)],
)
def test_threshold_reached_at_equality(amounts: list[int], reached: bool) -> None:
    """Reaching means total >= threshold: 1,000 fen reaches 1,000, 999 does not."""
    feed = Feed()
    applied = feed.send(*(order(f"o{i}", a) for i, a in enumerate(amounts)))
    assert [m.threshold_fen for m in applied.milestones] == ([1_000] if reached else [])


def test_milestones_count_only_new_first_hour_gross() -> None:
    """Duplicates, orders after the first hour and other brands add nothing to a
    brand's first-hour total; cancels do not take from it (gross only grows)."""
    feed = Feed()
    assert (
        feed.send(
            order("o1", 900),
            order("o1", 900, event_id="dup"),  # the same order again
            order("o2", 900, ts=T0 + HOUR_MS),  # after the first hour
            order("o3", 900, brand="b2"),  # another brand
            cancel("o1", 900),
        ).milestones
        == []
    )
    applied = feed.send(order("o4", 100, ts=T0 + 7))
    assert _kinds(applied.milestones) == [(GMV_THRESHOLD, 1_000, T0 + 7)]
    assert feed.brand()["net_gmv_fen"] == 900 + 900 + 100 - 900


@pytest.mark.parametrize(
    ("baseline", "orders_fen", "expected"),
    [
        (None, [100_000], []),  # no baseline: never
        (999, [100_000], []),  # below the floor (1,000): never
        (1_000, [2_000], [2_000]),  # at the floor: fires at 2x
        (1_500, [2_999], []),  # one fen short of 2x
        (1_500, [3_000], [3_000]),  # exactly 2x
        (1_500, [2_999, 1], [3_000]),
        (1_500, [10_000], [3_000]),
    ],
)
def test_yoy_double(
    baseline: int | None, orders_fen: list[int], expected: list[int]
) -> None:
    """yoy_double fires when first-hour gross reaches twice the baseline, with
    threshold_fen = 2 * baseline; never without a baseline or below the floor."""
    campaign = rules(
        thresholds_fen=(),
        baselines_fen={} if baseline is None else {"b1": baseline},
        yoy_min_baseline_fen=1_000,
    )
    feed = Feed(campaign)
    applied = feed.send(*(order(f"o{i}", a) for i, a in enumerate(orders_fen)))
    assert [(m.kind, m.threshold_fen) for m in applied.milestones] == [
        (YOY_DOUBLE, t) for t in expected
    ]


def test_yoy_and_threshold_together() -> None:
    """A brand with baseline 2,000 (target 4,000) reaches 1,000, then 4,000,
    then 5,000, in that order, each once."""
    feed = Feed(rules(baselines_fen={"b1": 2_000}))
    a = feed.send(order("o1", 1_000, ts=T0 + 1))
    b = feed.send(order("o2", 3_000, ts=T0 + 2))
    c = feed.send(order("o3", 1_000, ts=T0 + 3), order("o4", 1, ts=T0 + 4))
    assert _kinds(a.milestones) == [(GMV_THRESHOLD, 1_000, T0 + 1)]
    assert _kinds(b.milestones) == [(YOY_DOUBLE, 4_000, T0 + 2)]
    assert _kinds(c.milestones) == [(GMV_THRESHOLD, 5_000, T0 + 3)]
