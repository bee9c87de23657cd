"""streams.alerts.surge_clock: the slowest active partition's event time."""

from __future__ import annotations

from streams.alerts import IDLE_MS, surge_clock


def test_no_partitions_no_clock() -> None:
    assert surge_clock([]) == 0


def test_slowest_active_partition_holds_the_clock() -> None:
    """Two busy partitions: the clock is the one behind, so a minute is not
    judged while one partition's records of it are still to come."""
    assert surge_clock([b"1000:50000", b"9000:50500", b"4000:50200"]) == 1000


def test_a_quiet_partition_stops_holding_it_back() -> None:
    """A partition that has not moved for more than IDLE_MS of wall time (its
    producer went quiet) no longer counts."""
    now = 10_000_000
    entries = [f"1000:{now - IDLE_MS - 1}".encode(), f"9000:{now}".encode()]
    assert surge_clock(entries) == 9000
    entries = [f"1000:{now - IDLE_MS}".encode(), f"9000:{now}".encode()]
    assert surge_clock(entries) == 1000
