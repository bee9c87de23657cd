"""Shared test setup: integration tests need the real Kafka and Redis."""

from __future__ import annotations

import pytest

from tests.support.services import KAFKA, REDIS, services_up


@pytest.fixture(autouse=True)
def _real_services(request: pytest.FixtureRequest) -> None:
    """An integration test fails, never skips, when the services are down."""
    if request.node.get_closest_marker("integration") and not services_up():
        pytest.fail(f"Kafka ({KAFKA}) or Redis ({REDIS}) is down: run `make services`")
