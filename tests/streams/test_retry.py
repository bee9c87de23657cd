"""streams/retry.py: the one retry loop of the worker (backoff, hooks)."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from streams import retry
from streams.retry import retrying


def test_backoff_doubles_to_five_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Transient failures are retried after 0.1 s, 0.2 s, ... at most 5 s; the
    attempt is told when it is a retry; each failure is reported, then the
    pause, then `after_pause`."""
    events: list[object] = []

    async def sleep(delay_s: float) -> None:
        events.append(("sleep", delay_s))

    monkeypatch.setattr(retry.asyncio, "sleep", sleep)
    retries: list[bool] = []

    async def attempt(again: bool) -> str:
        retries.append(again)
        if len(retries) <= 8:
            raise RedisConnectionError("gone")
        return "done"

    def on_error(exc: BaseException, delay_s: float) -> None:
        events.append(("error", retry.transient_kind(exc), delay_s))

    async def after_pause(exc: BaseException) -> None:
        events.append("after")

    assert asyncio.run(retrying(attempt, on_error, after_pause)) == "done"
    assert retries == [False] + [True] * 8
    delays = [e[1] for e in events if isinstance(e, tuple) and e[0] == "sleep"]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])
    assert events[:3] == [("error", "redis", 0.1), ("sleep", 0.1), "after"]


def test_other_failures_propagate() -> None:
    async def attempt(again: bool) -> None:
        raise ValueError("a bug, not a blip")

    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(retrying(attempt, lambda exc, delay_s: None))
