"""streams.alerts.surge_clock: the slowest input partition's clock, where a
partition stops holding it back only when caught up in Kafka and idle."""

from __future__ import annotations

import pytest

from streams.alerts import IDLE_MS, parse_clocks, surge_clock

NOW = 1_760_000_000_000


@pytest.mark.parametrize(
    ("clocks", "ends", "applied", "want", "why"),
    [
        ({}, {}, {}, 0, "no partition, no clock"),
        (
            {"clicks:0": (1000, NOW), "clicks:1": (9000, NOW), "orders:0": (4000, NOW)},
            {"clicks:0": 50, "clicks:1": 50, "orders:0": 50},
            {"clicks:0": 49, "clicks:1": 49, "orders:0": 49},
            1000,
            "the slowest partition holds the clock",
        ),
        (
            {"clicks:0": (9000, NOW)},
            {"clicks:0": 50, "clicks:1": 10},
            {"clicks:0": 49},
            0,
            "a partition with records but no step yet holds it at 0 (before: "
            "only partitions already in the clock hash counted, so the first "
            "partition applied judged minutes alone)",
        ),
        (
            {"clicks:0": (1000, NOW - 5 * IDLE_MS), "clicks:1": (9000, NOW)},
            {"clicks:0": 80, "clicks:1": 50},
            {"clicks:0": 49, "clicks:1": 49},
            1000,
            "a quiet partition with records left to apply (its worker was "
            "killed) holds it, however long it has been quiet (before: dropped "
            "after 60 s, and minutes were judged without its traffic)",
        ),
        (
            {"clicks:0": (1000, NOW - IDLE_MS), "clicks:1": (9000, NOW)},
            {"clicks:0": 50, "clicks:1": 60},
            {"clicks:0": 49, "clicks:1": 49},
            9000,
            "caught up and idle for IDLE_MS: it no longer holds the clock",
        ),
        (
            {"clicks:0": (1000, NOW - IDLE_MS + 1), "clicks:1": (9000, NOW)},
            {"clicks:0": 50, "clicks:1": 60},
            {"clicks:0": 49, "clicks:1": 49},
            1000,
            "caught up but moved less than IDLE_MS ago: it still holds it",
        ),
        (
            {"clicks:0": (1000, NOW - IDLE_MS), "clicks:1": (9000, NOW - IDLE_MS)},
            {"clicks:0": 50, "clicks:1": 60},
            {"clicks:0": 49, "clicks:1": 59},
            9000,
            "every partition caught up and idle: all published is applied, "
            "the fastest clock judges",
        ),
        (
            {"clicks:0": (1000, NOW)},
            {"clicks:0": 50},
            {"clicks:0": 49},
            1000,
            "a partition empty in Kafka (not in ends, no clock) holds nothing",
        ),
        (
            {"clicks:0": (NOW - 40 * 60_000, NOW - 1000), "clicks:1": (NOW - 5, NOW)},
            {"clicks:0": 50, "clicks:1": 60},
            {"clicks:0": 49, "clicks:1": 50},
            NOW - IDLE_MS,
            "live (the fastest clock near the wall clock), a sparse caught-up "
            "partition whose chunk is still filling holds it to now - IDLE_MS "
            "at most",
        ),
        (
            {"clicks:0": (NOW - 40 * 60_000, NOW - 1000), "clicks:1": (NOW - 5, NOW)},
            {"clicks:0": 80, "clicks:1": 60},
            {"clicks:0": 49, "clicks:1": 50},
            NOW - 40 * 60_000,
            "live, a partition with records left to apply holds it where it is",
        ),
    ],
)
def test_surge_clock(
    clocks: dict[str, tuple[int, int]],
    ends: dict[str, int],
    applied: dict[str, int],
    want: int,
    why: str,
) -> None:
    assert surge_clock(clocks, ends, applied, NOW) == want, why


def test_parse_clocks() -> None:
    assert parse_clocks({b"clicks:0": b"1000:2000", b"orders:3": b"7"}) == {
        "clicks:0": (1000, 2000),
        "orders:3": (7, 0),
    }
