"""processors.counting.plan_batch and processors.milestones, on hand-made events."""

from __future__ import annotations

import pytest

from processors.counting import (
    CHANNEL_INDEX,
    DedupeId,
    Record,
    dedupe_generation,
    dedupe_id,
    plan_batch,
)
from processors.events import CHANNELS, Rejection
from processors.milestones import (
    GMV_THRESHOLD,
    YOY_DOUBLE,
    Target,
    brand_targets,
    crossings,
)
from tests.processors.make import END, HOUR_MS, T0, cancel, cart, click, order, rules

# ---------------------------------------------------------------------------
# plan_batch


def test_plan_offsets_per_partition() -> None:
    """Per partition the plan carries (offset applied before, last offset in the
    batch), whatever order the records come in; unknown partitions start at -1."""
    records = [
        ("clicks:0", 5, click("a")),
        ("clicks:0", 3, click("b")),
        ("clicks:0", 4, click("c")),
        ("carts:2", 0, cart("d")),
    ]
    plan = plan_batch(records, rules(), {"clicks:0": 2, "orders:0": 9})
    assert plan.offsets == {"clicks:0": (2, 5), "carts:2": (-1, 0)}
    assert not plan.empty


@pytest.mark.parametrize(
    ("applied", "gaps", "follows"),
    [
        ({"clicks:0": 4}, (), 4),  # begins right after the store: follows it
        ({"clicks:0": 1}, (), 4),  # a hole 2..4: follows 4, so the store refuses
        ({}, (), 4),  # nothing applied, the batch at 5: refused likewise
        ({"clicks:0": 1}, ("clicks:0",), 1),  # Kafka's own gap: follows the store
    ],
)
def test_plan_follows_the_offset_before_its_first_record(
    applied: dict[str, int], gaps: tuple[str, ...], follows: int
) -> None:
    """A plan carries the offset before its first record, so the store refuses a
    plan that does not begin right after its own offset (records fetched past a
    hole are never applied over it), unless the hole is Kafka's own."""
    records = [("clicks:0", o, click(f"e{o}")) for o in (5, 6, 7)]
    plan = plan_batch(records, rules(), applied, gaps)
    assert plan.offsets == {"clicks:0": (follows, 7)}


def test_plan_skips_applied_records() -> None:
    """Records at or below the applied offset are left out entirely: not
    counted, not rejected, not out of window."""
    records: list[Record] = [
        ("orders:0", 0, order("o1", 100)),
        ("orders:0", 1, Rejection("bad_value", "x")),
        ("orders:0", 2, order("o2", 100, ts=END)),
        ("orders:0", 3, order("o3", 300)),
    ]
    plan = plan_batch(records, rules(), {"orders:0": 2})
    assert plan.offsets == {"orders:0": (2, 3)}
    assert [line.amount_fen for line in plan.orders] == [300]
    assert (plan.rejected, plan.out_of_window) == ({}, 0)


def test_plan_of_an_applied_batch_is_empty() -> None:
    """A batch wholly at or below the applied offsets gives an empty plan."""
    records = [("clicks:0", i, click(f"e{i}")) for i in range(4)]
    plan = plan_batch(records, rules(), {"clicks:0": 3})
    assert plan.empty
    assert plan.offsets == {}
    assert plan_batch([], rules(), {}).empty


def test_plan_window_rejections_and_watermark() -> None:
    """Out-of-window events are only counted as such; rejections are counted per
    reason; max_ts_ms is the latest counted event time."""
    records: list[Record] = [
        ("clicks:0", 0, click("a", ts=T0 - 1)),
        ("clicks:0", 1, click("b", ts=T0 + 70)),
        ("clicks:0", 2, click("c", ts=END)),
        ("clicks:0", 3, click("d", ts=T0 + 50)),
        ("clicks:0", 4, Rejection("wrong_type", "x")),
        ("clicks:0", 5, Rejection("wrong_type", "y")),
        ("clicks:0", 6, Rejection("too_large", "z")),
    ]
    plan = plan_batch(records, rules(), {})
    assert plan.out_of_window == 2
    assert plan.rejected == {"wrong_type": 2, "too_large": 1}
    assert plan.max_ts_ms == T0 + 70
    assert sum(len(t.ids) for t in plan.clicks) == 2


def test_plan_of_only_rejections() -> None:
    """A batch of rejections still moves the offsets, and max_ts_ms stays 0."""
    plan = plan_batch([("orders:1", 0, Rejection("not_object", "x"))], rules(), {})
    assert plan.offsets == {"orders:1": (-1, 0)}
    assert plan.max_ts_ms == 0
    assert plan.rejected == {"not_object": 1}


def test_plan_groups_by_brand_and_channel() -> None:
    """Clicks and carts are tallied per (brand, channel); brands are numbered in
    order of first appearance."""
    records = [
        ("clicks:0", 0, click("a", brand="bx", channel="search")),
        ("clicks:0", 1, click("b", brand="ba", channel="search")),
        ("clicks:0", 2, click("c", brand="bx", channel="search")),
        ("clicks:0", 3, click("d", brand="bx", channel="detail")),
        ("carts:0", 0, cart("a", brand="ba")),
    ]
    plan = plan_batch(records, rules(), {})
    assert plan.brands == ["bx", "ba"]
    tallies = {
        (plan.brands[t.brand], CHANNELS[t.channel]): len(t.ids) for t in plan.clicks
    }
    assert tallies == {("bx", "search"): 2, ("ba", "search"): 1, ("bx", "detail"): 1}
    assert [(plan.brands[t.brand], CHANNELS[t.channel]) for t in plan.carts] == [
        ("ba", "other")
    ]


def test_plan_order_and_cancel_lines() -> None:
    """Order lines keep amount, qty, vip, user, time and the first-hour flag;
    cancel lines keep their amount; both in arrival order."""
    records = [
        ("orders:0", 0, order("o1", 100, ts=T0 + HOUR_MS - 1, qty=2, vip=True)),
        ("orders:0", 1, cancel("o9", 40)),
        ("orders:0", 2, order("o2", 200, ts=T0 + HOUR_MS, user="u7")),
    ]
    plan = plan_batch(records, rules(), {})
    got = [
        (o.amount_fen, o.qty, o.vip, o.user_id, o.ts_ms, o.first_hour)
        for o in plan.orders
    ]
    assert got == [
        (100, 2, True, "u1", T0 + HOUR_MS - 1, True),
        (200, 1, False, "u7", T0 + HOUR_MS, False),
    ]
    assert [c.amount_fen for c in plan.cancels] == [40]
    assert plan.orders[0].channel == CHANNEL_INDEX["other"]


def test_plan_targets_only_for_first_hour_orders() -> None:
    """Targets are attached to the brands with a first-hour order in the batch:
    the thresholds, plus twice the baseline when it is at least the floor."""
    campaign = rules(baselines_fen={"b1": 3_000, "b2": 5_000})
    records = [
        ("orders:0", 0, order("o1", 100, brand="b1")),
        ("orders:0", 1, order("o2", 100, brand="b2", ts=T0 + HOUR_MS)),
        ("orders:0", 2, click("c", brand="b3")),
    ]
    plan = plan_batch(records, campaign, {})
    assert {plan.brands[b]: t for b, t in plan.targets.items()} == {
        "b1": (
            Target(GMV_THRESHOLD, 1_000),
            Target(GMV_THRESHOLD, 5_000),
            Target(YOY_DOUBLE, 6_000),
        )
    }


def test_plan_ids_dedupe_spaces() -> None:
    """A click and a cart with one event_id get different ids; an order and its
    cancel (one order_id) too; copies of one order share their id."""
    records = [
        ("clicks:0", 0, click("same")),
        ("carts:0", 0, cart("same")),
        ("orders:0", 0, order("o1", 1, event_id="e1")),
        ("orders:0", 1, order("o1", 1, event_id="e2")),
        ("orders:0", 2, cancel("o1", 1)),
    ]
    plan = plan_batch(records, rules(), {})
    assert plan.clicks[0].ids != plan.carts[0].ids
    assert plan.orders[0].id == plan.orders[1].id
    assert plan.orders[0].id != plan.cancels[0].id


@pytest.mark.parametrize("shards", [1, 7, 16_384])
def test_dedupe_id_shape(shards: int) -> None:
    """A dedupe id is deterministic, its shard is in [0, shards), and its member
    is a signed 64-bit integer in decimal."""
    for kind in ("click", "cart", "order", "cancel"):
        for key in ("", "e1", "张三", "x" * 128):
            ident = dedupe_id(kind, key, shards)
            assert ident == dedupe_id(kind, key, shards)
            assert isinstance(ident, DedupeId)
            assert 0 <= ident.shard < shards
            assert -(2**63) <= int(ident.member) < 2**63
            assert str(int(ident.member)) == ident.member


def test_dedupe_ids_are_distinct() -> None:
    """10,000 distinct keys in each of the four spaces give 40,000 distinct ids
    (a 64-bit member collides with odds of about 4e-11 here)."""
    ids = {
        (d.shard, d.member)
        for kind in ("click", "cart", "order", "cancel")
        for i in range(10_000)
        for d in [dedupe_id(kind, f"k{i}", 16_384)]
    }
    assert len(ids) == 40_000


@pytest.mark.parametrize(
    ("watermark_ms", "horizon_ms", "generation"),
    [
        (0, 1_000, 0),
        (999, 1_000, 0),
        (1_000, 1_000, 1),
        (2_999, 1_000, 2),
        (3 * 86_400_000 + 5, 86_400_000, 3),
    ],
)
def test_dedupe_generation(watermark_ms: int, horizon_ms: int, generation: int) -> None:
    """The generation is the watermark divided by the horizon, rounded down."""
    assert dedupe_generation(watermark_ms, horizon_ms) == generation


# ---------------------------------------------------------------------------
# milestones

T1K = Target(GMV_THRESHOLD, 1_000)
T5K = Target(GMV_THRESHOLD, 5_000)
Y2K = Target(YOY_DOUBLE, 2_000)
Y1K = Target(YOY_DOUBLE, 1_000)

CROSSINGS = [
    ("nothing added", 0, [], (T1K,), []),
    ("no targets", 0, [(5_000, 1)], (), []),
    ("one short", 0, [(999, 1)], (T1K,), []),
    ("exactly", 0, [(1_000, 1)], (T1K,), [(T1K, 1)]),
    ("second step reaches", 0, [(500, 1), (500, 2)], (T1K,), [(T1K, 2)]),
    ("arrival order, not time", 0, [(600, 9), (600, 3)], (T1K,), [(T1K, 3)]),
    ("from a running total", 900, [(99, 1), (1, 2)], (T1K,), [(T1K, 2)]),
    ("one step, two targets", 0, [(6_000, 4)], (T1K, T5K), [(T1K, 4), (T5K, 4)]),
    ("targets unsorted", 0, [(6_000, 4)], (T5K, T1K), [(T1K, 4), (T5K, 4)]),
    ("two steps, two targets", 900, [(100, 1), (3_999, 2), (1, 3)], (T1K, T5K),
     [(T1K, 1), (T5K, 3)]),
    ("yoy between thresholds", 0, [(1_500, 1), (500, 2)], (T1K, T5K, Y2K),
     [(T1K, 1), (Y2K, 2)]),
    ("yoy equal to a threshold", 0, [(1_000, 7)], (T1K, Y1K),
     [(T1K, 7), (Y1K, 7)]),
    ("zero amounts", 0, [(0, 1), (0, 2)], (T1K,), []),
    # Already reached before: returned at the first step's time; the store, which
    # holds the milestone, drops it.
    ("already reached", 1_000, [(0, 5), (7, 6)], (T1K,), [(T1K, 5)]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("total_before", "increments", "targets", "expected"),
    [row[1:] for row in CROSSINGS],
    ids=[row[0] for row in CROSSINGS],
)
def test_crossings(
    total_before: int,
    increments: list[tuple[int, int]],
    targets: tuple[Target, ...],
    expected: list[tuple[Target, int]],
) -> None:
    """Each target the running total reaches (>=) is returned once, in threshold
    order, with the time of the increment that reached it in arrival order."""
    assert crossings(total_before, increments, targets) == expected


@pytest.mark.parametrize(
    ("baseline", "floor", "yoy"),
    [
        (None, 0, None),
        (0, 0, None),
        (999, 1_000, None),
        (1_000, 1_000, 2_000),
        (1_001, 1_000, 2_002),
        (5_000_000_000, 1_000_000, 10_000_000_000),
    ],
)
def test_brand_targets(baseline: int | None, floor: int, yoy: int | None) -> None:
    """A brand's targets are the thresholds, plus yoy_double at twice a positive
    baseline that is at least the floor."""
    thresholds = (1_000, 5_000)
    expected = [Target(GMV_THRESHOLD, 1_000), Target(GMV_THRESHOLD, 5_000)]
    if yoy is not None:
        expected.append(Target(YOY_DOUBLE, yoy))
    assert brand_targets(thresholds, baseline, floor) == tuple(expected)


def test_rules_targets_use_the_brand_baseline() -> None:
    """CampaignRules.targets looks the brand's baseline up: b1 (4,000) doubles at
    8,000; b2 has none."""
    campaign = rules(thresholds_fen=(1_000,), baselines_fen={"b1": 4_000})
    assert campaign.targets("b1") == (T1K, Target(YOY_DOUBLE, 8_000))
    assert campaign.targets("b2") == (T1K,)
    assert campaign.first_hour_end_ms == T0 + 3_600_000


def test_plan_traffic_is_scope_keys_per_minute() -> None:
    """The plan's traffic counts are, per event-time minute, the surge scopes of
    every click, cart and order it covers (duplicates included, cancels and
    records outside the window or already applied not), as processors/surge.py's
    `scope_keys` says one event at a time."""
    from collections import Counter

    from processors.surge import minute_of, scope_keys

    live = {"channel": "livestream", "room_id": "r1"}
    events = [
        click("a", ts=T0 + 1_000, brand="b1", **live),
        click("a", ts=T0 + 1_000, brand="b1", **live),  # a producer's duplicate
        click("b", ts=T0 + 61_000, brand="b2", channel="search"),
        cart("c", ts=T0 + 59_999, brand="b1", channel="livestream", room_id="r2"),
        order("o1", 100, ts=T0 + 2_000, brand="b2", channel="flash_sale"),
        order("o2", 100, ts=T0 + 62_000, brand="b1"),
        cancel("o1", 100, ts=T0 + 3_000, brand="b2", channel="flash_sale"),
        click("late", ts=END + 1, brand="b1"),  # outside the window
    ]
    topics = {"click": "clicks", "cart": "carts", "order": "orders", "cancel": "orders"}
    records = [(f"{topics[e.type]}:0", i, e) for i, e in enumerate(events)]
    records.sort(key=lambda r: r[0])
    applied = {"clicks:0": 0}  # the first click is already in the store
    plan = plan_batch(records, rules(), applied)
    expected: Counter[tuple[int, str, str]] = Counter()
    for name, offset, event in records:
        if offset <= applied.get(name, -1) or not T0 <= event.ts_ms < END:
            continue
        for scope, key in scope_keys(event):
            expected[minute_of(event.ts_ms), scope, key] += 1
    traffic = {
        (minute, *field.split("|", 1)): n
        for minute, cells in plan.traffic.items()
        for field, n in cells.items()
    }
    assert traffic == dict(expected)
    m = minute_of(T0 + 1_000)
    assert plan.traffic[m]["room|r1"] == 1
    assert plan.traffic[m]["flash_sale_orders|b2"] == 1
    assert plan.traffic[m]["channel|livestream"] == 1 + (m == minute_of(T0 + 59_999))
