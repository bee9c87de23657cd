"""Shared test setup: integration tests need the real Kafka and Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_servers import plain_redis
from tests.support.services import KAFKA, REDIS, services_up


@pytest.fixture(scope="session")
def step_redis_url() -> Iterator[str]:
    """A Redis server of the test session's own, for the atomic step's unit
    tests: they run the production Lua script, not a copy of its rules."""
    with plain_redis() as port:
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture(autouse=True)
def _real_services(request: pytest.FixtureRequest) -> None:
    """An integration test fails, never skips, when the services are down."""
    if request.node.get_closest_marker("integration") and not services_up():
        pytest.fail(f"Kafka ({KAFKA}) or Redis ({REDIS}) is down: run `make services`")
