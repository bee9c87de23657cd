"""The surge judge: turns the per-minute traffic in Redis into alerts (CONTRACT 5).

The atomic step of every batch adds its traffic to one Redis hash per event-time
minute (`sm:<minute>`, fields `scope|key`) and indexes the minute (`sm:idx`),
exactly once with its offsets. The judge, a task of every worker, waits until
a minute is complete — the campaign's surge clock (the latest event time of
its slowest active input partition, never ahead of the wall clock) is past the
minute's end plus `PRESALE_SURGE_LATENESS_MS` — then judges it with
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
from collections.abc import AsyncIterator, Iterable
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
from streams.metrics import Metrics

log = logging.getLogger(__name__)

RAISE_LUA: Final = resources.files("streams").joinpath("lua/raise.lua").read_text()
# A partition that has not moved for this long (wall clock) stops holding the
# surge clock back: a quiet partition must not stop the judging.
IDLE_MS: Final = 60_000
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


def surge_clock(entries: Iterable[bytes]) -> int:
    """The campaign's surge clock from its partitions' "event_ms:wall_ms" entries:
    the slowest partition's event time, among the partitions that moved within
    IDLE_MS of the latest one (a partition gone quiet does not hold it back)."""
    parsed = []
    for raw in entries:
        ts, _, wall = raw.decode().partition(":")
        parsed.append((int(ts), int(wall or 0)))
    if not parsed:
        return 0
    newest = max(wall for _, wall in parsed)
    return min(ts for ts, wall in parsed if wall >= newest - IDLE_MS)


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
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.rules = rules
        self.start_ms = start_ms
        self.lateness_ms = lateness_ms
        self.last_year = last_year or None
        self.metrics = metrics
        self.wake = asyncio.Event()
        self._raise = client.register_script(RAISE_LUA)

    def batch_applied(self) -> None:
        """Called by the pipeline after each applied batch: look now."""
        self.wake.set()

    async def _candidates(self, minute: int) -> AsyncIterator[list[bytes]]:
        """The minute's cells that counted at least `min_count` (no other cell
        can surge), in chunks of CHUNK_CELLS, read by HSCAN: the judge holds a
        chunk, however many cells the minute has (a million brands: a million)."""
        chunk: list[bytes] = []
        min_count = self.rules.min_count
        key = f"{self.prefix}sm:{minute}"
        async for field, value in self.client.hscan_iter(key, count=CHUNK_CELLS):
            if int(value) >= min_count:
                chunk.append(field)
                if len(chunk) >= CHUNK_CELLS:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    async def judge_minute(self, minute: int) -> list[Candidate]:
        """`evaluate_minute` over the minute's candidates, a chunk at a time:
        each chunk reads its cells' counts in the window's minutes (HMGET), so
        what is held is a chunk times the window, not every cell of it."""
        span = self.rules.history_minutes + self.rules.persistence_minutes
        window = [minute - i * MINUTE_MS for i in range(span)]
        found: dict[ScopeKey, Candidate] = {}
        async for fields in self._candidates(minute):
            async with self.client.pipeline(transaction=False) as pipe:
                for m in window:
                    pipe.hmget(f"{self.prefix}sm:{m}", fields)
                rows: list[Any] = await pipe.execute()
            counts = {
                m: {
                    _scope_key(f): int(v)
                    for f, v in zip(fields, values, strict=True)
                    if v is not None
                }
                for m, values in zip(window, rows, strict=True)
            }
            for c in evaluate_minute(
                minute, counts, self.rules, self.start_ms, self.last_year
            ):
                found[(c.scope, c.key)] = c  # HSCAN may return a cell twice
        return sorted(found.values(), key=lambda c: (c.scope, c.key))

    async def judge(self) -> list[dict[str, Any]]:
        """Judge every complete minute not judged yet; returns the alerts raised."""
        meta = self.prefix + "meta"
        through: Any = await self.client.hget(meta, "surge_through")
        clocks: Any = await self.client.hgetall(self.prefix + "clock")
        complete_before = surge_clock(clocks.values()) - MINUTE_MS - self.lateness_ms
        low = f"({int(through)}" if through is not None else "-inf"
        pending: list[Any] = await self.client.zrangebyscore(
            self.prefix + "sm:idx", low, complete_before
        )
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
            except Exception:  # keep judging through Redis blips
                log.exception("surge judging failed; retrying in 1 s")
                await asyncio.sleep(1.0)
