"""Dedupe for a whole campaign (CONTRACT section 3): orders and cancels for its
life, clicks and carts within the horizon of a watermark that follows the bulk
of the stream, older ones late.

Every case runs through the production Lua step and the in-memory store
(tests/processors/conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from processors.events import Event
from tests.processors.make import (
    DAY_MS,
    END,
    HOUR_MS,
    T0,
    Feed,
    cancel,
    cart,
    click,
    rules,
)
from tests.processors.make import order as make_order

pytestmark = pytest.mark.usefixtures("step_backend")


def bulk(feed: Feed, ts: int, n: int = 40, tag: str = "bulk") -> None:
    """n clicks at event time `ts` in two batches (32 watermark samples): the
    stream's bulk moving on."""
    clicks = [click(f"{tag}-{ts}-{i}", ts=ts) for i in range(n)]
    feed.send(*clicks[: n // 2], tp="clicks:0")
    feed.send(*clicks[n // 2 :], tp="clicks:0")


def test_orders_and_cancels_are_deduplicated_for_the_campaigns_life() -> None:
    """A re-sent order or cancel is never counted again, even after the
    watermark has moved 8 days (8 horizons) on: the first hour republished on
    day 9 adds nothing."""
    feed = Feed()
    feed.send(make_order("o1", 700, ts=T0 + 5), cancel("o2", 50, ts=T0 + 6))
    feed.send(make_order("o2", 300, ts=T0 + 7))
    for day in range(1, 9):
        bulk(feed, T0 + day * DAY_MS)
    # the median of the latest 64 samples: those of the last 2 days
    assert feed.state.watermark_ms == T0 + 7 * DAY_MS
    again = feed.send(
        make_order("o1", 700, ts=T0 + 5, event_id="day9-copy"),
        make_order("o2", 300, ts=T0 + 7),
        cancel("o2", 50, ts=T0 + 6),
    )
    assert (again.new_events, again.duplicates, again.late) == (0, 3, 0)
    b = feed.brand()
    assert (b["orders"], b["cancels"], b["gross_gmv_fen"], b["net_gmv_fen"]) == (
        2,
        1,
        1_000,
        950,
    )
    assert b["first_hour_gross_gmv_fen"] == 1_000
    assert list(feed.state.milestones) == ["gmv_threshold:b1:1000"]


@pytest.mark.parametrize("make", [click, cart])
def test_a_copy_within_the_horizon_is_a_duplicate(make: Callable[..., Event]) -> None:
    """A click or cart copy is dropped while its event time is within the
    horizon (24 h) of the watermark, however far the watermark moved: 23 h."""
    field = "clicks" if make is click else "carts"
    feed = Feed()
    feed.send(make("e1", ts=T0 + HOUR_MS), tp=f"{field}:0")
    bulk(feed, T0 + 24 * HOUR_MS)
    copy = feed.send(make("e1", ts=T0 + HOUR_MS), tp=f"{field}:1")
    assert (copy.new_events, copy.duplicates, copy.late) == (0, 1, 0)
    assert feed.brand()[field] == 1 + (40 if make is click else 0)
    assert feed.state.late == 0


@pytest.mark.parametrize("make", [click, cart])
def test_a_click_more_than_the_horizon_behind_is_late(
    make: Callable[..., Event],
) -> None:
    """A click or cart whose event time is more than the horizon behind the
    watermark is late: not counted, counted in `late`, new or a copy; one just
    inside the horizon counts."""
    field = "clicks" if make is click else "carts"
    feed = Feed()
    feed.send(make("seen", ts=T0 + 10), tp=f"{field}:0")
    bulk(feed, T0 + DAY_MS + 20)
    result = feed.send(
        make("seen", ts=T0 + 10),  # a copy, late
        make("new-old", ts=T0 + 19),  # never seen, but late all the same
        make("edge", ts=T0 + 20),  # exactly one horizon behind: counts
        tp=f"{field}:0",
    )
    assert (result.new_events, result.duplicates, result.late) == (1, 0, 2)
    assert feed.state.late == 2
    assert feed.brand()[field] == 2 + (40 if make is click else 0)


def test_late_counts_every_copy_whatever_the_batching() -> None:
    """Two copies of a late click count 2 in `late` whether they come in one
    batch or two: the field depends on the stream, not on where batches split."""
    totals = []
    for together in (True, False):
        feed = Feed()
        bulk(feed, T0 + 2 * DAY_MS)
        copies = [click("old", ts=T0), click("old", ts=T0)]
        if together:
            feed.send(*copies, tp="clicks:1")
        else:
            feed.send(copies[0], tp="clicks:1")
            feed.send(copies[1], tp="clicks:2")
        totals.append((feed.state.late, feed.state.totals["clicks"]))
    assert totals == [(2, 40), (2, 40)]


def test_one_event_ahead_does_not_move_the_watermark() -> None:
    """One click stamped at the campaign's last millisecond, alone in its batch
    at a quiet moment, moves nothing: ids seen before are kept, a re-sent order
    is still a duplicate, and clicks of the next minutes are not late."""
    feed = Feed()
    bulk(feed, T0 + 1_000)
    feed.send(make_order("o1", 100, ts=T0 + 1_500))
    feed.send(click("ahead", ts=END - 1), tp="clicks:3")
    assert feed.state.watermark_ms == T0 + 1_000
    again = feed.send(make_order("o1", 100, ts=T0 + 1_500, event_id="retry"))
    assert again.duplicates == 1
    copy = feed.send(click("bulk-1700000001000-3", ts=T0 + 1_000), tp="clicks:4")
    assert (copy.duplicates, copy.late) == (1, 0)
    fresh = feed.send(click("next", ts=T0 + 60_000), tp="clicks:0")
    assert (fresh.new_events, fresh.late) == (1, 0)


def test_a_clock_ahead_among_the_first_events_does_not_move_the_watermark() -> None:
    """The campaign's first counted event stamped on its last day: the
    watermark waits for 32 samples, of which it is one, and clicks of the
    first minutes are never late."""
    feed = Feed()
    feed.send(click("ahead", ts=END - 1), tp="clicks:0")
    assert feed.state.watermark_ms == 0
    bulk(feed, T0 + 1_000)
    assert feed.state.watermark_ms == T0 + 1_000
    fresh = feed.send(click("first-minute", ts=T0 + 2_000), tp="clicks:1")
    assert (fresh.new_events, fresh.late) == (1, 0)


def test_one_percent_of_a_batch_ahead_does_not_move_the_watermark() -> None:
    """A batch of 200 clicks, 2 of them (1%) stamped 5 days ahead: the watermark
    follows the other 198."""
    feed = Feed()
    batch = [click(f"c{i}", ts=T0 + 60_000) for i in range(198)]
    batch += [click(f"a{i}", ts=T0 + 5 * DAY_MS) for i in range(2)]
    feed.send(*batch, tp="clicks:0")
    feed.send(*[click(f"n{i}", ts=T0 + 60_000) for i in range(16)], tp="clicks:1")
    assert feed.state.watermark_ms == T0 + 60_000


def test_the_watermark_follows_a_quiet_stream() -> None:
    """Single events still move the watermark once most recent ones agree:
    after 64 lone clicks a day on, it has moved a day on."""
    feed = Feed()
    bulk(feed, T0)
    for i in range(64):
        feed.send(click(f"q{i}", ts=T0 + DAY_MS), tp="clicks:0")
    assert feed.state.watermark_ms == T0 + DAY_MS


def test_old_click_generations_are_dropped() -> None:
    """Memory stays bounded: once the watermark is past a generation by more
    than the horizon, its ids and keys go (horizon 1,000 ms here)."""
    feed = Feed(rules(dedupe_horizon_ms=1_000))
    for i in range(6):
        bulk(feed, T0 + i * 1_000, tag=f"g{i}")
    # the latest 64 samples are those of bulks 4 and 5: their median is bulk 4's
    assert feed.state.watermark_ms == T0 + 4_000
    first = T0 // 1_000
    assert feed.click_generations() == [first + 3, first + 4, first + 5]
