"""A connection closed by one task while another writes or reads on it fails
with ConnectionError, which the worker retries, on one Redis and on a Cluster.

The race is real: the worker's tasks share one client, and on a CLUSTERDOWN
answer (a master killed) the Cluster client closes every connection, in use or
not. redis-py 8.1.0 then lets the task in mid-command fail with AttributeError,
which no retry catches: the worker died of it in
test_cluster_faults.py::test_a_master_killed_and_restarted_from_its_aof.
Here many tasks run commands while another keeps closing every connection, the
way the Cluster client does, against real servers."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterError
from redis.exceptions import ConnectionError as RedisConnectionError

from streams.connect import GuardedConnection, redis_client
from streams.settings import Settings
from tests.support.redis_servers import plain_redis, redis_cluster

pytestmark = pytest.mark.integration

TASKS = 20
CLOSES = 300


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[int]]:
    with redis_cluster(3) as ports:
        yield ports


def client_of(url: str, cluster: bool) -> Any:
    env = {"PRESALE_REDIS_URL": url, "PRESALE_REDIS_CLUSTER": "1" if cluster else "0"}
    return redis_client(Settings.from_env(env, load=False))


async def race(client: Any, close_all: Callable[[], Awaitable[None]]) -> Counter[str]:
    """TASKS tasks SET and GET 10 kB values on keys of every slot while
    close_all() runs CLOSES times, 2 ms apart; the outcomes by kind."""
    outcomes: Counter[str] = Counter()
    done = asyncio.Event()

    async def load(task: int) -> None:
        n = 0
        while not done.is_set():
            key = f"closed-under-us:{task}:{n % 64}"
            n += 1
            try:
                await client.set(key, b"x" * 10_000)
                await client.get(key)
                outcomes["ok"] += 1
            except (RedisConnectionError, ClusterError):
                outcomes["connection"] += 1
                await asyncio.sleep(0.001)
            except Exception as exc:  # what the worker would die of
                outcomes[f"{type(exc).__name__}: {exc}"] += 1

    tasks = [asyncio.create_task(load(t)) for t in range(TASKS)]
    for _ in range(CLOSES):
        await asyncio.sleep(0.002)
        await close_all()
    done.set()
    await asyncio.gather(*tasks)
    await client.aclose()
    return outcomes


def test_one_redis_closed_under_us() -> None:
    with plain_redis() as port:
        client = client_of(f"redis://127.0.0.1:{port}/0", cluster=False)

        async def close_all() -> None:
            await client.connection_pool.disconnect(inuse_connections=True)

        outcomes = asyncio.run(race(client, close_all))
    assert set(outcomes) == {"ok", "connection"}, outcomes
    assert outcomes["connection"] > 0  # the race did happen


def test_cluster_closed_under_us(cluster: list[int]) -> None:
    client = client_of(f"redis://127.0.0.1:{cluster[0]}/0", cluster=True)
    assert isinstance(client, RedisCluster)
    opened: list[object] = []

    async def close_all() -> None:
        # What the client itself does on CLUSTERDOWN; first, the connections
        # it opened so far, to each node it found.
        for node in client.get_nodes():
            opened.extend(node._connections)
        await client.aclose()

    outcomes = asyncio.run(race(client, close_all))
    assert set(outcomes) <= {"ok", "connection"}, outcomes
    assert outcomes["ok"] > 0
    nodes = {f"127.0.0.1:{port}" for port in cluster}
    assert {node.name for node in client.get_nodes()} == nodes
    assert opened
    assert all(isinstance(conn, GuardedConnection) for conn in opened), {
        type(conn).__name__ for conn in opened
    }
