"""The surge judge: turns the per-minute traffic in Redis into alerts (CONTRACT 5).

The atomic step of every batch adds its traffic to one Redis hash per event-time
minute (`sm:<minute>`, fields `scope|key`) and indexes the minute (`sm:idx`),
exactly once with its offsets. The judge, a task of every worker, waits until
a minute is complete — the campaign's surge clock (`surge_clock`: the slowest
input partition's clock, which follows the bulk of its events, see
docs/alerts.md "When a minute is judged") is past the minute's end plus
`PRESALE_SURGE_LATENESS_MS` — then judges it with
`processors.surge` and raises its alerts through `lua/raise.lua`, which
advances the "judged through" cursor and applies the cooldown atomically.
Minutes are judged once each, in order, by whichever worker gets there first;
an alert goes to the Redis stream `<prefix>alerts`, to the outbox (so to
`presale.alerts`, exactly once) and to `presale_alerts_total` on the worker
that raised it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from importlib import resources
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from processors.surge import (
    MINUTE_MS,
    Candidate,
    LastYear,
    ScopeKey,
    SurgeRules,
    alert_id,
    evaluate_minute,
)
from streams.errors import PresaleError
from streams.metrics import Metrics
from streams.retry import TRANSIENT

log = logging.getLogger(__name__)

RAISE_LUA: Final = resources.files("streams").joinpath("lua/raise.lua").read_text()
# A partition stops holding the surge clock back only when all its records in
# Kafka are applied and it has not moved for this long (wall clock): a quiet
# partition must not stop the judging, and 60 s is far longer than any pause of
# a partition that is still being written (a killed worker's partitions have
# records left to apply, so they hold it back until their new owner is done).
IDLE_MS: Final = 60_000
# A stream is live when its fastest partition's clock is within this of the
# wall clock (a replay of a past campaign is hours or days behind). Live, a
# caught-up partition holds the clock back to the wall clock minus IDLE_MS at
# most: a partition of one record every 30 s takes 32 minutes to fill a
# 64-offset chunk, and would hold every judgement that far back.
LIVE_MS: Final = 600_000
# Kafka's end offsets are asked again after this long (the judge wakes after
# every batch; a partition new to Kafka is seen within 5 s).
ENDS_MAX_AGE_S: Final = 5.0
# Cells of a minute judged at a time: 5,000 cells times a 12-minute window is
# about 60,000 counts held (a few MB), whatever the minute holds.
CHUNK_CELLS: Final = 5_000
# How often an idle judge looks again (a batch applied wakes it at once).
_IDLE_S: Final = 1.0


def alert_record(c: Candidate, raised_at_ms: int) -> dict[str, Any]:
    """The alert of CONTRACT section 5."""
    return {
        "alert_id": alert_id(c),
        "scope": c.scope,
        "key": c.key,
        "minute_ms": c.minute_ms,
        "observed": c.observed,
        "baseline": round(c.baseline, 3),
        "ratio": round(c.ratio, 3),
        "severity": c.severity,
        "raised_at_ms": raised_at_ms,
    }


def alert_json(c: Candidate, raised_at_ms: int) -> str:
    return orjson.dumps(alert_record(c, raised_at_ms)).decode()


def parse_clocks(raw: Mapping[bytes, bytes]) -> dict[str, tuple[int, int]]:
    """The `clock` hash: "topic:partition" -> (event_ms, wall_ms of its last step)."""
    out = {}
    for tp, entry in raw.items():
        ts, _, wall = entry.decode().partition(":")
        out[tp.decode()] = (int(ts), int(wall or 0))
    return out


def surge_clock(
    clocks: Mapping[str, tuple[int, int]],
    ends: Mapping[str, int],
    applied: Mapping[str, int],
    now_ms: int,
) -> int:
    """The campaign's surge clock: the slowest input partition's clock.

    `clocks` holds each partition's (event_ms, wall_ms of its last step), `ends`
    Kafka's end offset of each partition that holds records, `applied` the last
    offset stored in Redis. Every partition with records holds the clock back
    (one not applied yet at 0), except one that is caught up (every record in
    Kafka applied) and idle (no step for IDLE_MS): a quiet partition must not
    stop the judging, while one whose records are still to be read (its worker
    was killed, or has not started) must. When every partition is caught up and
    idle, every record published is applied: the clock is the fastest one's.
    When the stream is live (the fastest clock within LIVE_MS of `now_ms`), a
    caught-up partition holds it back to `now_ms - IDLE_MS` at most, however
    few records it gets.
    """
    fastest = max((ts for ts, _wall in clocks.values()), default=0)
    live = fastest >= now_ms - LIVE_MS
    holding = []
    for tp in set(clocks) | set(ends):
        ts, wall = clocks.get(tp, (0, 0))
        caught_up = applied.get(tp, -1) + 1 >= ends.get(tp, 0)
        if caught_up and now_ms - wall >= IDLE_MS:
            continue
        if caught_up and live:
            ts = max(ts, now_ms - IDLE_MS)
        holding.append(ts)
    if holding:
        return min(holding)
    return fastest


def _scope_key(field: bytes) -> ScopeKey:
    scope, _, key = field.decode().partition("|")
    return scope, key


class SurgeJudge:
    """Judges complete minutes; one per worker, safe with many workers."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        rules: SurgeRules,
        start_ms: int,
        lateness_ms: int,
        last_year: LastYear | None,
        metrics: Metrics,
        end_offsets: Callable[[], Awaitable[dict[str, int]]],
        shards: tuple[str, ...] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        # The state shards' prefixes (streams/keys.py): each keeps the traffic
        # of the events counted in it, and the surge clocks of the partitions
        # it is home to; the campaign's prefix keeps the alerts.
        self.shards = shards or (prefix,)
        self.rules = rules
        self.start_ms = start_ms
        self.lateness_ms = lateness_ms
        self.last_year = last_year or None
        self.metrics = metrics
        # Kafka's end offsets of the input partitions that hold records
        # ("short:partition"), and when they were read (monotonic seconds).
        self._end_offsets = end_offsets
        self._ends: dict[str, int] = {}
        self._ends_at = -ENDS_MAX_AGE_S
        self._known = False
        self.wake = asyncio.Event()
        self._raise = client.register_script(RAISE_LUA)

    def batch_applied(self) -> None:
        """Called by the pipeline after each applied batch: look now."""
        self.wake.set()

    async def _candidates(self, minute: int) -> AsyncIterator[list[bytes]]:
        """The minute's cells that counted at least `min_count` (no other cell
        can surge), in chunks of CHUNK_CELLS, read by HSCAN: the judge holds a
        chunk, however many cells the minute has (a million brands: a million).
        With several shards a cell's count is split over them: a cell with
        `min_count` in all holds at least `min_count / shards` in one, so the
        cells at that in a shard are the candidates (their sums decide)."""
        chunk: list[bytes] = []
        n = len(self.shards)
        min_count = -(-self.rules.min_count // n)
        seen: set[bytes] = set()
        for prefix in self.shards:
            key = f"{prefix}sm:{minute}"
            async for field, value in self.client.hscan_iter(key, count=CHUNK_CELLS):
                if int(value) >= min_count and field not in seen:
                    if n > 1:
                        seen.add(field)
                    chunk.append(field)
                    if len(chunk) >= CHUNK_CELLS:
                        yield chunk
                        chunk = []
        if chunk:
            yield chunk

    async def judge_minute(self, minute: int) -> list[Candidate]:
        """`evaluate_minute` over the minute's candidates, a chunk at a time:
        each chunk reads its cells' counts in the window's minutes (HMGET, in
        every shard, summed), so what is held is a chunk times the window, not
        every cell of it."""
        span = self.rules.history_minutes + self.rules.persistence_minutes
        window = [minute - i * MINUTE_MS for i in range(span)]
        found: dict[ScopeKey, Candidate] = {}
        async for fields in self._candidates(minute):
            async with self.client.pipeline(transaction=False) as pipe:
                for m in window:
                    for prefix in self.shards:
                        pipe.hmget(f"{prefix}sm:{m}", fields)
                rows: list[Any] = await pipe.execute()
            counts: dict[int, dict[ScopeKey, int]] = {m: {} for m in window}
            per_minute = len(self.shards)
            for i, values in enumerate(rows):
                cells = counts[window[i // per_minute]]
                for f, v in zip(fields, values, strict=True):
                    if v is not None:
                        key = _scope_key(f)
                        cells[key] = cells.get(key, 0) + int(v)
            for c in evaluate_minute(
                minute, counts, self.rules, self.start_ms, self.last_year
            ):
                found[(c.scope, c.key)] = c  # HSCAN may return a cell twice
        return sorted(found.values(), key=lambda c: (c.scope, c.key))

    async def judge(self) -> list[dict[str, Any]]:
        """Judge every complete minute not judged yet; returns the alerts raised."""
        meta = self.prefix + "meta"
        if time.monotonic() - self._ends_at >= ENDS_MAX_AGE_S:
            try:
                self._ends = await self._end_offsets()
                self._known = True
            except PresaleError as exc:  # Kafka away: the last ends, if any
                log.warning("surge judge: Kafka's end offsets unknown (%s)", exc)
            self._ends_at = time.monotonic()
        if not self._known:  # which partitions hold records is not known yet
            return []
        # Kafka's ends first, then Redis: an offset applied is never past an end.
        # Each partition's clock is kept by its home shard, and its offset
        # applied is the lowest of the shards'.
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(meta, "surge_through")
            for prefix in self.shards:
                pipe.hgetall(prefix + "clock")
                pipe.hgetall(prefix + "off")
            through, *per_shard = await pipe.execute()
        clocks_raw: dict[bytes, bytes] = {}
        applied: dict[str, int] = {}
        for clocks_part, off_part in zip(per_shard[::2], per_shard[1::2], strict=True):
            clocks_raw.update(clocks_part)
            for tp, o in off_part.items():
                name = tp.decode()
                applied[name] = min(applied.get(name, int(o)), int(o))
        clock = surge_clock(
            parse_clocks(clocks_raw),
            self._ends,
            applied,
            int(time.time() * 1000),
        )
        complete_before = clock - MINUTE_MS - self.lateness_ms
        low = f"({int(through)}" if through is not None else "-inf"
        async with self.client.pipeline(transaction=False) as pipe:
            for prefix in self.shards:
                pipe.zrangebyscore(prefix + "sm:idx", low, complete_before)
            indexed: list[Any] = await pipe.execute()
        pending = sorted({int(m) for found in indexed for m in found})
        raised: list[dict[str, Any]] = []
        last = through.decode() if through is not None else ""
        for raw_minute in pending:
            minute = int(raw_minute)
            found = await self.judge_minute(minute)
            now_ms = int(time.time() * 1000)
            args = [
                self.prefix,
                minute,
                last,
                orjson.dumps(
                    [
                        [c.scope, c.key, alert_id(c), alert_json(c, now_ms)]
                        for c in found
                    ]
                ),
                self.rules.cooldown_minutes * MINUTE_MS,
            ]
            try:
                result: Any = await self._raise(keys=[meta], args=args)
            except NoScriptError:  # Redis restarted and lost its script cache
                self._raise = self.client.register_script(RAISE_LUA)
                result = await self._raise(keys=[meta], args=args)
            if result[0] == b"moved":  # another worker judged it: start again
                break
            last = str(minute)
            for record in result[1:]:
                alert = orjson.loads(record)
                self.metrics.alerts.labels(alert["scope"], alert["severity"]).inc()
                raised.append(alert)
        return raised

    async def run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=_IDLE_S)
            self.wake.clear()
            try:
                for alert in await self.judge():
                    log.info(
                        "surge alert %s: %s %s at %.2fx",
                        alert["severity"],
                        alert["scope"],
                        alert["key"],
                        alert["ratio"],
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep judging; a Redis blip in one line
                if isinstance(exc, TRANSIENT):
                    log.warning("surge judging failed (%r); retrying in 1 s", exc)
                else:
                    log.exception("surge judging failed; retrying in 1 s")
                await asyncio.sleep(1.0)
