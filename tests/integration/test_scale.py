"""Scale-out: 3 workers over 12 partitions per topic, a rebalance while the
first-hour recording is replayed (a fourth worker joins, then one stops), and
the report stays exact with every milestone published once."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

# The fault tests' checks, reused as they are (that file itself is not run here).
from tests.integration.test_exactly_once import FILE, NAME, assert_exact, finish
from tests.support.services import Env, Worker, recording_env

pytestmark = pytest.mark.integration
# The first hour at 200x: 18 s of replay, so both rebalances land inside it
# however fast the workers start.
PACED = "200"

PARTITIONS = 12
INPUTS = 3  # clicks, carts, orders


def _ready(worker: Worker) -> dict[str, Any]:
    """The worker's /ready body, whether it says 200 (ready) or 503 (not yet)."""
    url = f"http://127.0.0.1:{worker.web_port}/ready"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        assert exc.code == 503, exc
        body = json.loads(exc.read())
    return body


def _spread(workers: list[Worker], timeout: float = 120) -> list[int]:
    """Each worker's assigned input partitions, once all 36 are held and known."""
    deadline = time.monotonic() + timeout
    counts: list[int] = []
    while time.monotonic() < deadline:
        states = [_ready(w) for w in workers]
        counts = [s["partitions"] for s in states]
        if sum(counts) == PARTITIONS * INPUTS and all(s["ready"] for s in states):
            return counts
        time.sleep(0.5)
    msg = f"partitions never settled: {counts}"
    raise AssertionError(msg)


def test_three_workers_twelve_partitions_with_rebalance() -> None:
    """3 workers share 12 partitions x 3 topics (each holds some); mid-replay a
    fourth joins and then one of the first three stops (SIGTERM): the report
    equals the reference exactly and each milestone is on the topic once."""
    env = Env({**recording_env(NAME), "PRESALE_TOPIC_PARTITIONS": str(PARTITIONS)})
    pool = [Worker(env, f"s{i}").start() for i in range(3)]
    replay = None
    try:
        first = _spread(pool)
        assert all(n > 0 for n in first), first
        replay = env.background("replay", "--quiet", "--speed", PACED, str(FILE))
        time.sleep(4)
        pool.append(Worker(env, "s3").start())
        time.sleep(4)
        pool[0].stop()
        assert replay.poll() is None, "the replay ended before the rebalances"
        finish(replay)
        alive = pool[1:]
        assert_exact(env, alive)
        after = _spread(alive)
        assert all(n > 0 for n in after), after
    finally:
        if replay is not None and replay.poll() is None:
            replay.kill()
        for w in pool:
            w.stop()
