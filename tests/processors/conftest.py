"""The atomic step's cases run twice: through the in-memory store and through
the production Lua script in a Redis of the test session's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.processors.make import BACKEND


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module that uses the `step_backend` fixture runs each test per store."""
    if "step_backend" in metafunc.fixturenames:
        metafunc.parametrize("step_backend", ["memory", "lua"], indirect=True)


@pytest.fixture
def step_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The store the test's Feeds apply their plans through."""
    url = request.getfixturevalue("step_redis_url") if request.param == "lua" else None
    token = BACKEND.set(url)
    try:
        yield request.param
    finally:
        BACKEND.reset(token)
