"""GET /report off the counting path: built in a thread of its own, one at a time,
cached for a second, over one Redis and one Kafka client kept between builds.

Built on the worker's own event loop, a report held the loop while it read and
sorted (5,000 brands: 564 ms a request, most of it a new Kafka client), and
parallel requests each built their own: a burst from inside the pod network
slowed counting. Here the worker's loop only hands the request over and sends
the bytes back; N requests within a second cost one build.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from typing import Any, Final

import orjson

from processors.events import INPUT_TOPICS
from streams.errors import PresaleError
from streams.kafka import EndOffsets, lag
from streams.report import DEFAULT_MINUTES, MAX_MINUTES
from streams.settings import Settings
from streams.store import RedisStore

# A report is at most a second old: the live page polls every second.
CACHE_S: Final = 1.0
# `?top=` above this is refused: a million brands' report is hundreds of MB of
# JSON; without `top` the report still holds every brand (CONTRACT section 7).
MAX_TOP: Final = 100_000
# Distinct `top` values kept; more are dropped together (one cache a value).
MAX_CACHED: Final = 16


class BadQuery(PresaleError):
    """A query parameter of a web request that is not a value we accept."""


def parse_report_top(raw: str | None) -> int | None:
    """`?top=N`: absent means every brand; else N must be ASCII digits in
    1..MAX_TOP. `²` is a digit to `str.isdigit()` and not to `int()`: it used to
    pass the one and fail the other, answering 500."""
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_TOP)):
        msg = f"top must be a whole number from 1 to {MAX_TOP:,}, got {raw[:40]!r}"
        raise BadQuery(msg)
    top = int(raw)
    if not 1 <= top <= MAX_TOP:
        msg = f"top must be a whole number from 1 to {MAX_TOP:,}, got {top:,}"
        raise BadQuery(msg)
    return top


def parse_report_minutes(raw: str | None) -> int:
    """`?minutes=N`: the latest N minutes of the GMV curve (default 60), N in
    0..MAX_MINUTES, as `presale report --minutes`."""
    if raw is None:
        return DEFAULT_MINUTES
    if not (raw.isascii() and raw.isdigit()) or int(raw[:9]) > MAX_MINUTES:
        shown = raw[:40]
        msg = f"minutes must be a whole number from 0 to {MAX_MINUTES:,}, got {shown!r}"
        raise BadQuery(msg)
    return int(raw)


Query = tuple[int | None, int]  # (top, minutes)


class ReportBuilder:
    """Builds the report's JSON in its own thread and event loop."""

    def __init__(self, settings: Settings, cache_s: float = CACHE_S) -> None:
        self.settings = settings
        self.cache_s = cache_s
        self.builds = 0  # how many reports were built (tests read it)
        self._cache: dict[Query, tuple[float, bytes]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()
        self._store: RedisStore | None = None
        self._ends: EndOffsets | None = None
        self._lock: asyncio.Lock | None = None

    def _ensure_thread(self) -> asyncio.AbstractEventLoop:
        with self._started:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="presale-report", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    async def get(self, top: int | None, minutes: int = DEFAULT_MINUTES) -> bytes:
        """The report's JSON, from any event loop: built, or from the cache."""
        future: Future[bytes] = asyncio.run_coroutine_threadsafe(
            self._get((top, minutes)), self._ensure_thread()
        )
        return await asyncio.wrap_future(future)

    async def _get(self, top: Query) -> bytes:
        hit = self._cache.get(top)
        if hit is not None and time.monotonic() - hit[0] < self.cache_s:
            return hit[1]
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one build at a time; the waiters take its result
            hit = self._cache.get(top)
            if hit is not None and time.monotonic() - hit[0] < self.cache_s:
                return hit[1]
            body = await self._build(top)
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[top] = (time.monotonic(), body)
            return body

    async def _build(self, query: Query) -> bytes:
        self.builds += 1
        if self._store is None:
            self._store = RedisStore.from_settings(self.settings)
            self._ends = EndOffsets(self.settings)
        assert self._ends is not None
        try:  # ends, then applied, then counters: see streams/cli.py:_report
            ends = await self._ends.read(INPUT_TOPICS)
            consumer_lag: int | None = lag(
                ends, await self._store.applied_offsets(ends)
            )
        except PresaleError:
            consumer_lag = None
        body = await self._store.report(top=query[0], minutes=query[1])
        body["consumer_lag"] = consumer_lag
        return orjson.dumps(body)

    async def _close(self) -> None:
        if self._ends is not None:
            await self._ends.close()
        if self._store is not None:
            await self._store.close()

    def close(self) -> None:
        """Stop the thread (the worker's shutdown)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = None


async def respond(web: Any, builder: ReportBuilder, query: Any) -> Any:
    """The GET /report response: 400 for a bad `top` or `minutes`, else the
    report."""
    try:
        top = parse_report_top(query.get("top"))
        minutes = parse_report_minutes(query.get("minutes"))
    except BadQuery as exc:
        return web.json({"error": str(exc)}, status=400)
    body = await builder.get(top, minutes)
    return web.bytes(body, content_type="application/json")
