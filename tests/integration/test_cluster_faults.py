"""The fault tests of docs/exactly-once.md on a 3-master Redis Cluster, where a
campaign's state is split into 12 state shards over every master plus the
campaign's own slot (docs/architecture.md): workers killed and a rebalance
while a paced replay runs, the stream replayed a second time, and a master
killed and restarted from its AOF mid-replay. Each ends with the report the
independent reference expects and every milestone on its topic once.
(A slot migrated mid-replay: tests/integration/test_redis_cluster.py.)"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bench.redis_servers import cluster_node_options, stop
from tests.integration.helpers import assert_exact as assert_exact_of
from tests.integration.helpers import finish as finish_replay
from tests.support.redis_servers import redis_cluster
from tests.support.services import STREAMS, Env, Worker, recording_env

pytestmark = pytest.mark.integration

NAME = "small"
FILE = STREAMS / f"{NAME}.jsonl.gz"
PACED = "300"
CLUSTER_AOF = ("--appendonly", "yes", "--appendfsync", "always")


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[int]]:
    """3 masters, each keeping an AOF synced at every write: a master killed
    and started again comes back with everything it acknowledged."""
    with redis_cluster(3, *CLUSTER_AOF) as ports:
        yield ports


def cluster_env(ports: list[int]) -> Env:
    """The recording's settings on the cluster, the campaign's state cleared
    (the module's tests share the cluster and the campaign)."""
    env = Env(
        {
            **recording_env(NAME),
            "PRESALE_REDIS_URL": f"redis://127.0.0.1:{ports[0]}/0",
            "PRESALE_REDIS_CLUSTER": "1",
        }
    )
    env.presale("reset")
    return env


def assert_exact(env: Env, alive: list[Worker], replays: int = 1) -> None:
    assert_exact_of(env, alive, NAME, replays)


def finish(replay: subprocess.Popen[str]) -> None:
    finish_replay(replay, timeout=240)


def test_kills_and_a_rebalance_then_the_stream_again(cluster: list[int]) -> None:
    """Two workers over the 6 partitions; mid-replay one is killed (-9), one
    joins, the first is stopped and another killed; then the whole stream is
    published a second time: each shard's step and each fold counted once."""
    env = cluster_env(cluster)
    pool = [Worker(env, f"c{i}").start() for i in range(2)]
    replay = env.background("replay", "--quiet", "--speed", PACED, str(FILE))
    try:
        time.sleep(2)
        pool[0].kill()
        pool.append(Worker(env, "c2").start())
        time.sleep(2)
        pool[1].stop()
        pool.append(Worker(env, "c3").start())
        time.sleep(1)
        pool[2].kill()
        finish(replay)
        env.replay(FILE)  # every record a second time
        alive = [w for w in pool if w.proc and w.proc.poll() is None]
        assert len(alive) == 1
        assert_exact(env, alive, replays=2)
    finally:
        for w in pool:
            w.stop()


def _restart_node(port: int) -> subprocess.Popen[bytes]:
    """Kill a cluster master (SIGKILL) and start it again on its own files:
    its cluster config and its AOF."""
    node = redis.Redis(port=port)
    pid = int(node.info("server")["process_id"])
    workdir = Path(node.config_get("dir")["dir"])
    node.close()
    subprocess.run(["kill", "-9", str(pid)], check=True)
    time.sleep(1.0)
    return subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            *cluster_node_options(port),
            *CLUSTER_AOF,
            "--save",
            "",
            "--logfile",
            str(workdir / f"redis-{port}-again.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_a_master_killed_and_restarted_from_its_aof(cluster: list[int]) -> None:
    """A master holding four shards (and perhaps the campaign's slot) is killed
    mid-replay and started again from its AOF: the worker waits for the
    cluster, its steps and folds go on, and the report is exact."""
    env = cluster_env(cluster)
    worker = Worker(env, "m").start()
    replay = env.background("replay", "--quiet", "--speed", PACED, str(FILE))
    again: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(3)
        again = _restart_node(cluster[1])
        deadline = time.monotonic() + 60
        while True:
            try:
                state = redis.Redis(port=cluster[1]).cluster("info")
                if state.get("cluster_state") == "ok":
                    break
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline, "the master did not come back"
            time.sleep(0.5)
        finish(replay)
        assert_exact(env, [worker])
    finally:
        worker.stop()
        # The restarted master stays up for the module's other tests; the
        # fixture stops the processes it started, this one is ours to stop.
        if again is not None:
            _stop_later.append(again)


_stop_later: list[subprocess.Popen[bytes]] = []


@pytest.fixture(scope="module", autouse=True)
def _stop_restarted() -> Iterator[None]:
    yield
    stop(_stop_later)
