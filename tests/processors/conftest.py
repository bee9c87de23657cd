"""The atomic step's cases run three times: through the in-memory store, and
through the production Lua scripts in a Redis of the test session's own, with
one state shard and with four (each batch split into the shards' steps and
the fold, as on a Redis Cluster)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.processors.make import BACKEND, SHARDS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module that uses the `step_backend` fixture runs each test per store."""
    if "step_backend" in metafunc.fixturenames:
        metafunc.parametrize(
            "step_backend", ["memory", "lua", "lua-shards"], indirect=True
        )


@pytest.fixture
def step_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The store the test's Feeds apply their plans through."""
    lua = request.param.startswith("lua")
    url = request.getfixturevalue("step_redis_url") if lua else None
    token = BACKEND.set(url)
    shards = SHARDS.set(4 if request.param == "lua-shards" else 1)
    try:
        yield request.param
    finally:
        SHARDS.reset(shards)
        BACKEND.reset(token)
