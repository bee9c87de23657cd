"""Traffic surge detection per scope and event-time minute (CONTRACT section 5).

Pure functions over per-minute counts; the worker keeps the counts in Redis, calls
`evaluate_minute` once a minute is complete, applies the cooldown atomically and
publishes what is left. docs/alerts.md explains the method and its measured
quality; `seeds.surge_eval` measures it.

The method, in one paragraph. A scope's baseline is the median of its counts in
the `history_minutes` (10) minutes before the minutes being judged, raised to
last year's count of the same campaign minute where a baseline CSV gives one. A
minute is a surge candidate when it and the `persistence_minutes - 1` minutes
before it (2 minutes in all) each have
- at least `min_count` (20) events,
- a baseline of at least `min_baseline` (5.0) events a minute,
- a count at least `ratio` (1.4, +40%) times the baseline, and
- a count at least `min_z` (3.5) Poisson standard deviations (sqrt of the
  baseline) above the baseline.
The candidate is `critical` when the current minute is at least
`critical_ratio` (2.0) times its baseline, else `warning`.

Why these choices:
- The median ignores a single spiky minute in the history and needs half the
  history minutes to move, so it neither chases a spike nor follows a surge
  before the surge is reported; it trails a slow steady growth by about
  (history / 2 + persistence) minutes, which keeps +2%/min growth at about
  1.15x, well below 1.4x.
- Persistence (2 minutes) is what makes a single spiky minute not fire, at the
  price of one minute of delay: a step is reported 1 event-minute after its
  onset, inside the 2 minutes the contract allows.
- The baseline of every minute of the run is computed from the minutes before
  the whole run, so the run's own first minutes never raise it.
- The ratio alone fires on noise at low volume (a Poisson count of mean 10 is
  14 or more 14% of the time); the z-score guard needs +3.5 sqrt(baseline)
  above it, the volume floors keep scopes of a few events a minute silent.
  Above a baseline of about 77 events a minute, the ratio is the binding rule.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Final

from processors.events import CART, CLICK, ORDER, Event

BRAND: Final = "brand"
CHANNEL: Final = "channel"
ROOM: Final = "room"
FLASH_SALE_ORDERS: Final = "flash_sale_orders"
SCOPES: Final = (BRAND, CHANNEL, ROOM, FLASH_SALE_ORDERS)

WARNING: Final = "warning"
CRITICAL: Final = "critical"
SEVERITIES: Final = (WARNING, CRITICAL)

MINUTE_MS: Final = 60_000

# Traffic: a shopper doing something. A cancel takes an order back; it is not
# traffic, so a wave of cancels never reads as a surge.
TRAFFIC_TYPES: Final = frozenset({CLICK, CART, ORDER})

ScopeKey = tuple[str, str]
Counts = Mapping[int, Mapping[ScopeKey, int]]
LastYear = Mapping[tuple[str, str, int], int]


def scope_keys(event: Event) -> tuple[ScopeKey, ...]:
    """The (scope, key) pairs one valid, in-window event adds one to.

    Clicks, carts and orders are traffic; each counts for its brand and its
    channel, a livestream one also for its room, and an order in the flash_sale
    channel also for its brand's flash-sale orders. Cancels count for nothing.
    The worker counts traffic as delivered, once per Kafka record (in the same
    atomic step as the offsets): a producer's duplicate is traffic too.
    """
    if event.type not in TRAFFIC_TYPES:
        return ()
    keys: tuple[ScopeKey, ...] = ((BRAND, event.brand_id), (CHANNEL, event.channel))
    if event.channel == "livestream" and event.room_id is not None:
        keys += ((ROOM, event.room_id),)
    if event.type == ORDER and event.channel == "flash_sale":
        keys += ((FLASH_SALE_ORDERS, event.brand_id),)
    return keys


# The surge clock of one input partition follows the bulk of its events, never
# one event: its records are cut into chunks of CLOCK_CHUNK_OFFSETS consecutive
# offsets (64), and a chunk, once the partition is applied past it, moves the
# clock to the lower median of its counted event times (never back). So it takes
# 33 records of a chunk with a clock ahead to move it (a run of 32 from one
# producer, or any share below half of a chunk, cannot), and the clock is the
# same whatever the batching: chunks are cut by offset, not by batch. A chunk
# with fewer than CLOCK_MIN_EVENTS (8) counted events (mostly rejected or out of
# the window) moves nothing. The price: the clock trails its partition by one
# to one and a half chunks, 64-96 records (a tenth of a second at 1,000 records
# a second, a minute and a half at 1 record a second).
CLOCK_CHUNK_OFFSETS: Final = 64
CLOCK_MIN_EVENTS: Final = 8


def chunk_clock(ts_ms: list[int]) -> int:
    """The event time one complete chunk moves its partition's clock to: the
    lower median of its counted event times, 0 (nothing) under CLOCK_MIN_EVENTS.
    `lua/apply.lua` computes the same for chunks that span batches."""
    if len(ts_ms) < CLOCK_MIN_EVENTS:
        return 0
    return sorted(ts_ms)[(len(ts_ms) - 1) // 2]


def minute_of(ts_ms: int) -> int:
    """The start (epoch ms) of the event-time minute holding `ts_ms`."""
    return ts_ms - ts_ms % MINUTE_MS


@dataclass(frozen=True, slots=True)
class SurgeRules:
    """The detector's settings; the defaults are the ones docs/alerts.md measures.

    ratio: a minute must be at least this many times its baseline (1.4 = +40%,
        the contract's default).
    critical_ratio: the current minute at this many times its baseline or more
        is `critical` (2.0: traffic has doubled).
    min_count: each minute of the run needs at least this many events (20): a
        scope of a few events a minute cannot surge.
    min_baseline: the baseline must be at least this (5.0 events a minute); a
        scope rising from nothing (a room going live) has no ratio to speak of.
    history_minutes: how many minutes before the run the median is taken over
        (10: enough to ignore a spike or two, short enough to follow the
        campaign's own curve).
    persistence_minutes: how many consecutive minutes must surge (2: one spiky
        minute never fires; a step is seen 1 minute after its onset).
    min_z: each minute of the run must be this many Poisson standard deviations
        above its baseline (3.5): the noise guard of low-volume scopes; 3.0 lets
        ten times as many false alerts through (0.34 against 0.03 per 100 quiet
        scope-hours in seeds.surge_eval).
    cooldown_minutes: after an alert, its scope raises none for this many
        minutes (15: longer than the median needs to take a step in, so one
        surge raises one alert).
    """

    ratio: float = 1.4
    critical_ratio: float = 2.0
    min_count: int = 20
    min_baseline: float = 5.0
    history_minutes: int = 10
    persistence_minutes: int = 2
    min_z: float = 3.5
    cooldown_minutes: int = 15

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.ratio) and self.ratio > 1.0):
            problems.append(f"ratio must be a number above 1, got {self.ratio}")
        if not (
            math.isfinite(self.critical_ratio) and self.critical_ratio >= self.ratio
        ):
            problems.append(
                f"critical_ratio must be at least ratio ({self.ratio}), "
                f"got {self.critical_ratio}"
            )
        if self.min_count < 1:
            problems.append(f"min_count must be at least 1, got {self.min_count}")
        if not (math.isfinite(self.min_baseline) and self.min_baseline > 0):
            problems.append(f"min_baseline must be above 0, got {self.min_baseline}")
        if not 1 <= self.history_minutes <= 1440:
            problems.append(
                f"history_minutes must be in [1, 1440], got {self.history_minutes}"
            )
        if not 1 <= self.persistence_minutes <= 10:
            problems.append(
                "persistence_minutes must be in [1, 10], "
                f"got {self.persistence_minutes}"
            )
        if not (math.isfinite(self.min_z) and self.min_z >= 0):
            problems.append(f"min_z must be 0 or more, got {self.min_z}")
        if not 1 <= self.cooldown_minutes <= 1440:
            problems.append(
                f"cooldown_minutes must be in [1, 1440], got {self.cooldown_minutes}"
            )
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A scope surging at one minute, before the cooldown."""

    scope: str
    key: str
    minute_ms: int
    observed: int
    baseline: float
    ratio: float
    severity: str


def alert_id(c: Candidate) -> str:
    """The alert's id: one scope alerts at most once per minute."""
    return f"{c.scope}:{c.key}:{c.minute_ms}"


SURGE_CSV_HEADER: Final = ("scope", "key", "minute", "count")


def read_surge_baseline(text: str) -> dict[tuple[str, str, int], int]:
    """Parse last year's per-minute counts, CSV `scope,key,minute,count`.

    `minute` is the minute's offset from the campaign start (0 = the first
    minute); `count` what the scope counted in it last year. A header line is
    optional; blank lines are skipped. Bad input raises ValueError naming the
    line.
    """
    baseline: dict[tuple[str, str, int], int] = {}
    rows = csv.reader(text.removeprefix("\ufeff").splitlines())
    for line_no, row in enumerate(rows, start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        cells = [cell.strip() for cell in row]
        if line_no == 1 and tuple(cells) == SURGE_CSV_HEADER:
            continue
        if len(cells) != 4:
            msg = (
                f"line {line_no}: expected scope,key,minute,count, "
                f"got {len(cells)} fields"
            )
            raise ValueError(msg)
        scope, key, minute_text, count_text = cells
        if scope not in SCOPES:
            msg = (
                f"line {line_no}: scope must be one of {', '.join(SCOPES)}, "
                f"got {scope!r}"
            )
            raise ValueError(msg)
        if not key:
            raise ValueError(f"line {line_no}: key is empty")
        minute = _non_negative(minute_text, "minute", line_no)
        count = _non_negative(count_text, "count", line_no)
        if (scope, key, minute) in baseline:
            msg = f"line {line_no}: {scope},{key},{minute} is given twice"
            raise ValueError(msg)
        baseline[(scope, key, minute)] = count
    return baseline


def _non_negative(text: str, name: str, line_no: int) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        msg = f"line {line_no}: {name} must be an integer, got {text!r}"
        raise ValueError(msg) from exc
    if value < 0:
        msg = f"line {line_no}: {name} must not be negative, got {value}"
        raise ValueError(msg)
    return value


def _first_whole_minute(start_ms: int) -> int:
    """The first minute entirely inside the campaign: history starts there."""
    return minute_of(start_ms + MINUTE_MS - 1)


def evaluate_minute(
    minute_ms: int,
    counts: Counts,
    rules: SurgeRules,
    start_ms: int = 0,
    last_year: LastYear | None = None,
) -> list[Candidate]:
    """The scopes that surge at `minute_ms`, before the cooldown, sorted by scope
    and key.

    `counts` maps minute starts (epoch ms) to each scope's count in that minute; a
    minute or a scope missing from it counted zero. Only scopes counted in
    `minute_ms` itself can surge. The recent baseline needs all
    `history_minutes` minutes before the run inside the campaign (from its first
    whole minute on); until then a scope is judged against last year's counts
    alone, where `last_year` has them, and not at all otherwise.

    `last_year` maps (scope, key, minute offset from the campaign start) to
    last year's count. Where it holds the judged minute, the baseline is the
    larger of the recent median and last year's count: a surge must stand out
    against both what the scope did minutes ago and what it did at this point
    of last year's campaign (a flash sale that happened at 20:30 last year too
    is the plan, not a surge).
    """
    minute_ms = minute_of(minute_ms)
    current = counts.get(minute_ms)
    if not current:
        return []
    run = [
        minute_ms - (rules.persistence_minutes - 1 - i) * MINUTE_MS
        for i in range(rules.persistence_minutes)
    ]
    history = [
        run[0] - (rules.history_minutes - i) * MINUTE_MS
        for i in range(rules.history_minutes)
    ]
    has_history = history[0] >= _first_whole_minute(start_ms)
    campaign_minute = minute_of(start_ms)
    empty: Mapping[ScopeKey, int] = {}
    run_counts = [counts.get(m, empty) for m in run]
    history_counts = [counts.get(m, empty) for m in history] if has_history else []
    found: list[Candidate] = []
    for scope_key in sorted(current):
        if current[scope_key] < rules.min_count:
            continue
        recent: float | None = None
        if has_history:
            recent = statistics.median(c.get(scope_key, 0) for c in history_counts)
        judged = []
        for m, minute_counts in zip(run, run_counts, strict=True):
            observed = minute_counts.get(scope_key, 0)
            baseline = recent
            if last_year is not None:
                offset = (m - campaign_minute) // MINUTE_MS
                previous = last_year.get((scope_key[0], scope_key[1], offset))
                if previous is not None:
                    baseline = previous if baseline is None else max(baseline, previous)
            if baseline is None or not _surges(observed, baseline, rules):
                break
            judged.append((observed, float(baseline)))
        else:
            observed, baseline = judged[-1]
            ratio = observed / baseline
            severity = CRITICAL if ratio >= rules.critical_ratio else WARNING
            found.append(
                Candidate(
                    scope=scope_key[0],
                    key=scope_key[1],
                    minute_ms=minute_ms,
                    observed=observed,
                    baseline=baseline,
                    ratio=ratio,
                    severity=severity,
                )
            )
    return found


def _surges(observed: int, baseline: float, rules: SurgeRules) -> bool:
    return (
        observed >= rules.min_count
        and baseline >= rules.min_baseline
        and observed >= rules.ratio * baseline
        and observed - baseline >= rules.min_z * math.sqrt(baseline)
    )


def cooled(
    candidates: Iterable[Candidate],
    last_alert_minute: MutableMapping[ScopeKey, int],
    rules: SurgeRules,
) -> list[Candidate]:
    """The candidates that become alerts; records their minute per scope.

    A candidate is raised unless its (scope, key) raised an alert at a minute L
    with `minute_ms - L < cooldown_minutes` minutes (an earlier minute judged
    late included). Severity plays no part: a critical that follows a warning
    inside the cooldown is not raised, so one surge raises one alert, and the
    rule fits in a few lines of the worker's Lua step.
    """
    cooldown_ms = rules.cooldown_minutes * MINUTE_MS
    raised = []
    for c in candidates:
        scope_key = (c.scope, c.key)
        last = last_alert_minute.get(scope_key)
        if last is not None and c.minute_ms - last < cooldown_ms:
            continue
        last_alert_minute[scope_key] = c.minute_ms
        raised.append(c)
    return raised


def detect(
    counts: Counts,
    rules: SurgeRules,
    start_ms: int = 0,
    last_year: LastYear | None = None,
) -> list[Candidate]:
    """The reference run: every minute of `counts` in order, judged and cooled."""
    last_alert_minute: dict[ScopeKey, int] = {}
    alerts: list[Candidate] = []
    for minute_ms in sorted(counts):
        found = evaluate_minute(minute_ms, counts, rules, start_ms, last_year)
        alerts.extend(cooled(found, last_alert_minute, rules))
    return alerts
