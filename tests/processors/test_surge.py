"""The surge detector's rules, one by one, on hand-made minute counts."""

from __future__ import annotations

import pytest

from processors.events import Event
from processors.surge import (
    CRITICAL,
    SCOPES,
    WARNING,
    Candidate,
    SurgeRules,
    alert_id,
    cooled,
    detect,
    evaluate_minute,
    minute_of,
    read_surge_baseline,
    scope_keys,
)

M = 60_000
T0 = 1_760_529_600_000
S = ("brand", "b1")
RULES = SurgeRules()  # ratio 1.4, critical 2.0, min_count 20, history 10, ...


def series(values: list[int], key: tuple[str, str] = S) -> dict[int, dict]:
    """Minute counts of one scope from T0 on, one value a minute."""
    return {T0 + i * M: {key: v} for i, v in enumerate(values) if v}


def at(counts: dict[int, dict], minute: int, **kw: object) -> list[Candidate]:
    return evaluate_minute(T0 + minute * M, counts, RULES, T0, **kw)  # type: ignore[arg-type]


def ev(type_: str, channel: str = "search", room: str | None = None) -> Event:
    return Event("e1", type_, T0, "u1", "b1", channel, room, order_id="o1")


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (ev("click"), (("brand", "b1"), ("channel", "search"))),
        (ev("cart", "store"), (("brand", "b1"), ("channel", "store"))),
        (ev("order"), (("brand", "b1"), ("channel", "search"))),
        (ev("cancel"), ()),
        (ev("cancel", "flash_sale"), ()),
        (
            ev("click", "livestream", "r9"),
            (("brand", "b1"), ("channel", "livestream"), ("room", "r9")),
        ),
        (
            ev("order", "livestream", "r9"),
            (("brand", "b1"), ("channel", "livestream"), ("room", "r9")),
        ),
        (ev("click", "flash_sale"), (("brand", "b1"), ("channel", "flash_sale"))),
        (
            ev("order", "flash_sale"),
            (("brand", "b1"), ("channel", "flash_sale"), ("flash_sale_orders", "b1")),
        ),
        # a room_id outside livestream is ignored: rooms are livestream rooms
        (ev("click", "store", "r9"), (("brand", "b1"), ("channel", "store"))),
    ],
)
def test_scope_keys(event: Event, expected: tuple) -> None:
    """Clicks, carts and orders count for brand and channel, livestream ones for
    their room, flash-sale orders for their brand's flash-sale orders; cancels
    for nothing."""
    assert scope_keys(event) == expected
    assert {s for s, _ in expected} <= set(SCOPES)


@pytest.mark.parametrize(
    ("ts_ms", "minute_ms"),
    [(0, 0), (59_999, 0), (60_000, 60_000), (T0 + 61_234, T0 + M), (T0 - 1, T0 - M)],
)
def test_minute_of(ts_ms: int, minute_ms: int) -> None:
    assert minute_of(ts_ms) == minute_ms


FLAT = [100] * 12


@pytest.mark.parametrize(
    ("values", "minute", "fires"),
    [
        ([*FLAT, 200, 200], 13, True),  # a step, 2 minutes at 2x: fires
        ([*FLAT, 200], 12, False),  # its first minute alone: not yet
        ([*FLAT, 500, 100], 13, False),  # one spiky minute, then back: never
        ([*FLAT, 500, 100, 100], 14, False),
        ([*FLAT, 140, 140], 13, True),  # exactly +40% fires
        ([*FLAT, 139, 150], 13, False),  # one minute short of +40%
        ([*FLAT, 150, 139], 13, False),
        ([*FLAT, 110, 120, 130, 135], 15, False),  # growth below 1.4x of the median
    ],
)
def test_ratio_and_persistence(values: list[int], minute: int, fires: bool) -> None:
    """Every minute of the 2-minute run must be at least 1.4x the median of the
    10 minutes before the run."""
    found = at(series(values), minute)
    assert bool(found) is fires


def test_candidate_fields_and_severity() -> None:
    """observed and ratio are the current minute's; 2x and more is critical."""
    [c] = at(series([*FLAT, 150, 150]), 13)
    assert (c.scope, c.key, c.minute_ms) == ("brand", "b1", T0 + 13 * M)
    assert (c.observed, c.baseline, c.ratio, c.severity) == (150, 100.0, 1.5, WARNING)
    [c] = at(series([*FLAT, 150, 200]), 13)
    assert (c.ratio, c.severity) == (2.0, CRITICAL)


def test_baseline_is_the_median_before_the_run() -> None:
    """A spike inside the history moves the median not at all; the baseline is
    the median of minutes 2..11 for the run 12..13."""
    values = [100, 100, 900, 90, 110, 100, 100, 100, 100, 100, 100, 100, 150, 150]
    [c] = at(series(values), 13)
    assert c.baseline == 100.0


def test_missing_minutes_are_zero() -> None:
    """A minute missing from the counts counted 0: a scope silent for most of its
    history has a median of 0, below the floor, and never fires."""
    values = [0, 0, 0, 0, 0, 0, 30, 30, 30, 30, 0, 0, 100, 100]
    assert at(series(values), 13) == []
    # with the history filled in, the same run fires
    assert at(series([30] * 12 + [100, 100]), 13) != []


def test_zero_baseline_never_fires() -> None:
    """A scope rising from nothing (a room going live) has no ratio: no alert."""
    assert at(series([0] * 12 + [500, 500]), 13) == []


@pytest.mark.parametrize(
    ("base", "run", "fires"),
    [
        (10, [40, 40], True),  # 4x, z = 9.5, 40 >= 20
        (10, [19, 40], False),  # one minute below min_count 20
        (4, [20, 20], False),  # baseline below min_baseline 5
        (5, [20, 20], True),  # exactly at the floors: z = 6.7
        (25, [40, 40], False),  # 1.6x, but z = 3.0 < 3.5: noise at this volume
        (25, [43, 43], True),  # z = 3.6
    ],
)
def test_floors_and_noise_guard(base: int, run: list[int], fires: bool) -> None:
    """min_count (20) for every minute of the run, min_baseline (5), and the
    Poisson z-score guard (3.5) keep low-volume noise silent."""
    assert bool(at(series([base] * 12 + run), 13)) is fires


def test_no_history_before_the_campaign() -> None:
    """The recent baseline needs its 10 history minutes inside the campaign; an
    earlier run is not judged (without last year's counts)."""
    counts = series([100] * 12 + [300, 300])  # run 12..13, history 2..11
    assert evaluate_minute(T0 + 13 * M, counts, RULES, T0 + 3 * M) == []
    # a start inside minute 2 makes minute 3 the first whole one
    assert evaluate_minute(T0 + 13 * M, counts, RULES, T0 + 2 * M + 1) == []
    assert evaluate_minute(T0 + 13 * M, counts, RULES, T0 + 2 * M) != []
    assert evaluate_minute(T0 + 13 * M, counts, RULES, T0) != []


def test_last_year_raises_the_baseline() -> None:
    """Where last year's count of the same campaign minute is given, the
    baseline is the larger of it and the recent median."""
    counts = series([*FLAT, 250, 250])
    planned = {("brand", "b1", 12): 240, ("brand", "b1", 13): 240}
    assert at(counts, 13, last_year=planned) == []  # last year had it too
    small = {("brand", "b1", 12): 50, ("brand", "b1", 13): 50}
    [c] = at(counts, 13, last_year=small)  # the recent median wins
    assert c.baseline == 100.0
    other = {("brand", "b2", 12): 240, ("room", "b1", 13): 240}
    assert at(counts, 13, last_year=other) != []  # other scopes' counts: no effect


def test_last_year_alone_judges_the_first_minutes() -> None:
    """Before there is history (the campaign's first minutes), last year's
    counts are the baseline: a rush twice last year's fires at minute 1."""
    counts = series([400, 400])
    last_year = {("brand", "b1", 0): 150, ("brand", "b1", 1): 150}
    [c] = at(counts, 1, last_year=last_year)
    assert (c.baseline, c.severity) == (150.0, CRITICAL)
    assert at(counts, 1) == []
    # a minute of the run without last year's count and without history: none
    assert at(counts, 1, last_year={("brand", "b1", 1): 150}) == []


def test_order_is_sorted_and_ids() -> None:
    """Candidates come sorted by (scope, key); the alert id names scope, key and
    minute."""
    keys = [("room", "r2"), ("brand", "b9"), ("room", "r1"), ("channel", "search")]
    counts: dict[int, dict] = {}
    for i in range(14):
        counts[T0 + i * M] = {k: (300 if i >= 12 else 100) for k in keys}
    found = at(counts, 13)
    assert [(c.scope, c.key) for c in found] == sorted(keys)
    assert alert_id(found[0]) == f"brand:b9:{T0 + 13 * M}"


def cand(minute: int, key: str = "b1", severity: str = WARNING) -> Candidate:
    return Candidate("brand", key, T0 + minute * M, 200, 100.0, 2.0, severity)


def test_cooldown() -> None:
    """One alert per scope per 15 minutes, whatever the severity; other scopes
    and later minutes are not held back; an earlier minute judged late is."""
    last: dict[tuple[str, str], int] = {}
    assert cooled([cand(20), cand(20, "b2")], last, RULES) == [
        cand(20),
        cand(20, "b2"),
    ]
    assert last == {("brand", "b1"): T0 + 20 * M, ("brand", "b2"): T0 + 20 * M}
    assert cooled([cand(21, severity=CRITICAL)], last, RULES) == []
    assert cooled([cand(34)], last, RULES) == []
    assert cooled([cand(19)], last, RULES) == []
    assert cooled([cand(20)], last, RULES) == []  # the same minute again
    assert cooled([cand(35)], last, RULES) == [cand(35)]
    assert last[("brand", "b1")] == T0 + 35 * M


def test_detect_one_alert_per_surge() -> None:
    """The reference run: a 2x step lasting 30 minutes raises one alert, one
    minute after its onset; the median has taken the step in before the
    cooldown ends."""
    values = [100] * 20 + [200] * 30 + [100] * 10
    alerts = detect(series(values), RULES, T0)
    assert [(a.minute_ms - T0) // M for a in alerts] == [21]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratio": 1.0}, "ratio must be a number above 1"),
        ({"ratio": float("nan")}, "ratio must be a number above 1"),
        ({"critical_ratio": 1.2}, "critical_ratio must be at least ratio"),
        ({"min_count": 0}, "min_count must be at least 1"),
        ({"min_baseline": 0.0}, "min_baseline must be above 0"),
        ({"history_minutes": 0}, "history_minutes must be in [1, 1440]"),
        ({"persistence_minutes": 11}, "persistence_minutes must be in [1, 10]"),
        ({"min_z": -1.0}, "min_z must be 0 or more"),
        ({"cooldown_minutes": 0}, "cooldown_minutes must be in [1, 1440]"),
    ],
)
def test_rules_refuse_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        SurgeRules(**kwargs)


def test_read_surge_baseline() -> None:
    """Header optional, BOM and blank lines tolerated, spaces trimmed."""
    text = "\ufeffscope,key,minute,count\nbrand,b1,0,120\n\nroom, r9 ,3,7\n"
    assert read_surge_baseline(text) == {
        ("brand", "b1", 0): 120,
        ("room", "r9", 3): 7,
    }
    assert read_surge_baseline("channel,search,59,4000") == {
        ("channel", "search", 59): 4000
    }
    assert read_surge_baseline("") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("brand,b1,0", "line 1: expected scope,key,minute,count, got 3 fields"),
        ("scope,key,minute,count\nbrand,b1,0,1,2", "line 2: expected"),
        ("shop,b1,0,1", "line 1: scope must be one of brand, channel, room"),
        ("brand,,0,1", "line 1: key is empty"),
        ("brand,b1,x,1", "line 1: minute must be an integer, got 'x'"),
        ("brand,b1,1.5,1", "line 1: minute must be an integer"),
        ("brand,b1,-1,1", "line 1: minute must not be negative"),
        ("brand,b1,0,-3", "line 1: count must not be negative"),
        ("brand,b1,0,", "line 1: count must be an integer"),
        ("brand,b1,0,1\nbrand,b1,0,2", "line 2: brand,b1,0 is given twice"),
        ("brand,b1,0,1\nscope,key,minute,count", "line 2: scope must be one of"),
    ],
)
def test_read_surge_baseline_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_surge_baseline(text)
