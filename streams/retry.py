"""The worker's one retry loop: what Redis or Kafka going away fails is tried
again, with a backoff from 0.1 s doubling up to 5 s, until it succeeds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.errors import KafkaError
from redis.exceptions import BusyLoadingError, ClusterError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")

# Failures that pass: Redis or Kafka restarting, a connection dropped, a Redis
# Cluster slot on the move (ClusterError: the client's redirections ran out
# while a slot migrates).
TRANSIENT = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    TryAgainError,
    ClusterError,
    KafkaError,
    ConnectionError,
    TimeoutError,
    OSError,
)

FIRST_DELAY_S = 0.1
MAX_DELAY_S = 5.0


def transient_kind(exc: BaseException) -> str:
    """The `retries` metric's label of a transient failure."""
    return "kafka" if isinstance(exc, KafkaError) else "redis"


async def retrying(
    attempt: Callable[[bool], Awaitable[T]],
    on_error: Callable[[BaseException, float], None],
    after_pause: Callable[[BaseException], Awaitable[None]] | None = None,
) -> T:
    """`await attempt(retry)` until it returns; `retry` is False the first time.

    A TRANSIENT failure is told to `on_error(exc, delay_s)` (it logs, it
    counts), then waited out for delay_s, then `after_pause(exc)` runs (when
    given) and the attempt starts again. Anything else propagates.
    """
    delay_s = FIRST_DELAY_S
    retry = False
    while True:
        try:
            return await attempt(retry)
        except TRANSIENT as exc:
            retry = True
            on_error(exc, delay_s)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, MAX_DELAY_S)
            if after_pause is not None:
                await after_pause(exc)
