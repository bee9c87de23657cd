"""The planner's part of the per-partition surge clock (processors/surge.py,
processors/counting.py): chunks of 64 offsets, each moving its partition's clock
to the lower median of its counted event times, so one event, or a run of up to
32 with a clock hours ahead, cannot move it."""

from __future__ import annotations

import pytest

from processors.counting import Record, partition_clock, plan_batch
from processors.surge import CLOCK_CHUNK_OFFSETS, CLOCK_MIN_EVENTS, chunk_clock
from tests.processors.make import T0, click, rules

HOURS_AHEAD = 5 * 3_600_000


def stream(n: int, ahead: set[int], tp: str = "clicks:0") -> list[Record]:
    """n clicks one second apart on one partition, offsets 0..n-1; those in
    `ahead` carry a clock 5 hours ahead."""
    return [
        (tp, i, click(f"e{i}", T0 + i * 1000 + (HOURS_AHEAD if i in ahead else 0)))
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("times", "want"),
    [
        ([], 0),
        (list(range(CLOCK_MIN_EVENTS - 1)), 0),
        (list(range(CLOCK_MIN_EVENTS)), (CLOCK_MIN_EVENTS - 1) // 2),
        ([5, 1, 9, 3, 7, 2, 8, 4, 6, 0], 4),  # lower median of 0..9
        ([1] * 32 + [10**9] * 32, 1),  # half ahead: the lower median holds
    ],
)
def test_chunk_clock(times: list[int], want: int) -> None:
    assert chunk_clock(times) == want


def test_one_event_ahead_alone_does_not_move_the_clock() -> None:
    """A batch of one partition with one click 5 hours ahead among 200: its
    clock stays with the bulk (fails before: the clock was the batch's latest
    event time, 5 hours ahead)."""
    plan = plan_batch(stream(200, {150}), rules(), {})
    clock = plan.highs["clicks:0"]
    # chunks 0-2 (offsets 0-191) are complete: chunk 2's lower median, the
    # 32nd of its 63 events on time (offset 150 is the one ahead)
    assert clock.best == T0 + 160 * 1000
    assert clock.pieces == [(3, [T0 + i * 1000 for i in range(192, 200)])]
    assert clock.last == 199


def test_a_run_of_32_ahead_does_not_move_it() -> None:
    ahead = set(range(64, 96))  # half of chunk 1
    plan = plan_batch(stream(128, ahead), rules(), {})
    # chunk 1 is offsets 64-127: 32 ahead, 32 not; its lower median is the
    # latest of those not ahead
    assert plan.highs["clicks:0"].best == T0 + 127 * 1000


@pytest.mark.parametrize("size", [1, 7, 50, 64, 100, 333])
def test_the_same_chunks_whatever_the_batching(size: int) -> None:
    """Cut into batches of `size`, the chunks a store completes (joining the
    pieces the batches hand over, as lua/apply.lua does) give the same clock
    as one batch."""
    records = stream(700, {3, 70, 71, 500})
    whole = plan_batch(records, rules(), {}).highs["clicks:0"]
    part: tuple[int, list[int]] | None = None
    best = 0
    applied = -1
    for i in range(0, len(records), size):
        c = plan_batch(records[i : i + size], rules(), {"clicks:0": applied}).highs[
            "clicks:0"
        ]
        applied = c.last
        best = max(best, c.best)
        for chunk, times in c.pieces:
            if part and part[0] == chunk:
                part = (chunk, part[1] + times)
            else:
                if part:
                    best = max(best, chunk_clock(part[1]))
                part = (chunk, times)
            if c.last >= (part[0] + 1) * CLOCK_CHUNK_OFFSETS - 1:
                best = max(best, chunk_clock(part[1]))
                part = None
    assert best == whole.best
    assert best == T0 + (640 - 64 + 31) * 1000  # chunk 9, offsets 576-639


def test_every_partition_moved_is_in_the_plan() -> None:
    """A partition whose records were all rejected or out of the window still
    tells the store it moved (the judge's idle rule reads when)."""
    records: list[Record] = [
        ("clicks:0", 0, click("a", T0 - 1)),
        ("clicks:1", 5, click("b", T0)),
    ]
    plan = plan_batch(records, rules(), {})
    assert plan.highs["clicks:0"] == partition_clock([], [], -1, 0)
    assert plan.highs["clicks:1"].pieces == [(0, [T0])]
