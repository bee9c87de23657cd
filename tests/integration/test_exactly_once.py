"""Exactly-once effects under crashes, rebalances, restarts and replays.

Every test replays a committed recording through the real Kafka into the real
Redis while something goes wrong, then requires the report to equal the one the
independent batch reference computed, and every milestone to be on the
milestones topic exactly once. `make chaos` runs the same with more faults
(PRESALE_CHAOS_KILLS=20).
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from typing import Any

import pytest
import redis

from tests.integration.helpers import assert_exact as assert_exact_of
from tests.integration.helpers import expected_report, finish
from tests.support.services import REDIS, ROOT, STREAMS, Env, Worker, recording_env

pytestmark = pytest.mark.integration

KILLS = int(os.environ.get("PRESALE_CHAOS_KILLS", "5"))
SEED = int(os.environ.get("PRESALE_CHAOS_SEED", "2025"))
SERVICES = ["bash", str(ROOT / "deploy" / "local" / "services.sh")]
NAME = "first-hour"
FILE = STREAMS / f"{NAME}.jsonl.gz"
# The recording spans about 130 minutes of event time; at 500x it takes about
# 16 s to publish, long enough for the faults to land while records flow.
PACED = "500"


def expected(replays: int = 1) -> dict[str, Any]:
    return expected_report(NAME, replays)


def assert_exact(env: Env, alive: list[Worker], replays: int = 1) -> dict[str, Any]:
    return assert_exact_of(env, alive, NAME, replays)


def test_kill9_at_random_points_and_replay_twice() -> None:
    """kill -9 the worker KILLS times at random points while a paced replay runs,
    restarting it each time, then replay the whole stream a second time: the
    report equals the expected one exactly, each milestone published once."""
    rng = random.Random(SEED)
    env = Env(recording_env(NAME))
    replay = env.background("replay", "--quiet", "--speed", PACED, str(FILE))
    pending_at_kill = []
    for i in range(KILLS):
        worker = Worker(env, f"kill{i}").start()
        time.sleep(rng.uniform(0.3, 2.5))
        worker.kill()
        pending_at_kill.append(env.report()["consumer_lag"])
    finish(replay)
    env.replay(FILE)  # every record a second time: nothing may count twice
    final = Worker(env, "final").start()
    try:
        assert_exact(env, [final], replays=2)
    finally:
        final.stop()
    # Most kills must have hit a worker with work in hand.
    busy = sum(1 for lag in pending_at_kill if lag > 0)
    assert busy >= KILLS // 2, pending_at_kill


def test_rebalance_three_workers() -> None:
    """3 workers over 6 partitions per topic; during a paced replay one is
    stopped, one killed, and two new ones join: exact report, every milestone
    exactly once in Redis and on the topic."""
    env = Env(recording_env(NAME))
    pool = [Worker(env, f"r{i}").start() for i in range(3)]
    replay = env.background("replay", "--quiet", "--speed", PACED, str(FILE))
    try:
        time.sleep(3)
        pool[0].stop()
        time.sleep(2)
        pool.append(Worker(env, "r3").start())
        time.sleep(2)
        pool[1].kill()
        pool.append(Worker(env, "r4").start())
        finish(replay)
        alive = [w for w in pool if w.proc and w.proc.poll() is None]
        assert len(alive) == 3
        assert_exact(env, alive)
    finally:
        for w in pool:
            w.stop()


def services(*args: str) -> None:
    subprocess.run([*SERVICES, *args], check=True, capture_output=True, timeout=180)


def test_redis_killed_and_restarted() -> None:
    """Redis is killed (SIGKILL) mid-replay and restarted from its AOF; the
    worker waits for it and goes on: exact report."""
    env = Env(recording_env(NAME))
    worker = Worker(env, "w").start()
    replay = env.background("replay", "--quiet", "--speed", PACED, str(FILE))
    try:
        time.sleep(4)
        services("kill", "redis")
        time.sleep(2)
        services("up")
        finish(replay)
        assert_exact(env, [worker])
    finally:
        worker.stop()


SNAPSHOT_LUA = """
local out = {}
for _, k in ipairs(redis.call('KEYS', ARGV[1])) do
  out[#out + 1] = k
  out[#out + 1] = redis.call('DUMP', k)
end
return out
"""
RESTORE_LUA = """
for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end
for i = 2, #ARGV, 2 do redis.call('RESTORE', ARGV[i], 0, ARGV[i + 1]) end
return (#ARGV - 1) / 2
"""


def test_redis_loses_its_last_writes() -> None:
    """Redis goes back in time, as after a restart with `appendfsync everysec`
    that lost its last second: the campaign's keys are atomically put back to a
    snapshot taken seconds earlier, while the worker runs. The worker sees its
    offsets went back, re-reads those records from Kafka and applies them again
    (dedupe sets went back too): exact report, milestones still once."""
    env = Env(recording_env(NAME))
    prefix = f"presale:\\{{{env.vars['PRESALE_CAMPAIGN_ID']}\\}}:*"  # glob-escaped
    client = redis.Redis.from_url(REDIS)
    worker = Worker(env, "w").start()
    replay = env.background("replay", "--quiet", "--speed", PACED, str(FILE))
    try:
        time.sleep(4)
        snapshot = client.eval(SNAPSHOT_LUA, 0, prefix)
        applied_then = sum(int(v) for v in client.hvals(snapshot_key(env, "off")))
        time.sleep(3)
        applied_later = sum(int(v) for v in client.hvals(snapshot_key(env, "off")))
        restored = client.eval(RESTORE_LUA, 0, prefix, *snapshot)
        assert restored > 0
        assert applied_later > applied_then, "nothing was applied between the two"
        finish(replay)
        assert_exact(env, [worker])
    finally:
        worker.stop()
        client.close()


def test_redis_rolled_back_after_the_replay_has_ended() -> None:
    """Redis loses writes after the last record was applied (hole e of issue
    13): the campaign's keys are put back to a snapshot taken mid-replay once
    the replay has ended and every record is applied. No record arrives after
    that, so no step can find out; the worker's lag timer does (Redis offsets
    against the ones it applied), re-reads those partitions and the report is
    exact again within 60 s (measured: 112,380 records lost, the report
    complete again 13.6 s after); `presale_store_went_back_total` counts them.
    Fails before: the worker waited for each partition's next batch, which
    never came, and consumer_lag stayed above 0."""
    env = Env(recording_env(NAME))
    prefix = f"presale:\\{{{env.vars['PRESALE_CAMPAIGN_ID']}\\}}:*"  # glob-escaped
    client = redis.Redis.from_url(REDIS)
    worker = Worker(env, "w").start()
    replay = env.background("replay", "--quiet", "--speed", PACED, str(FILE))
    try:
        time.sleep(4)
        snapshot = client.eval(SNAPSHOT_LUA, 0, prefix)
        finish(replay)
        env.wait_applied(timeout=240, alive=[worker])
        applied_end = sum(int(v) for v in client.hvals(snapshot_key(env, "off")))
        assert client.eval(RESTORE_LUA, 0, prefix, *snapshot) > 0
        back = sum(int(v) for v in client.hvals(snapshot_key(env, "off")))
        assert back < applied_end, "nothing was applied after the snapshot"
        restored_at = time.monotonic()
        live = env.wait_applied(timeout=60, alive=[worker])
        assert live["consumer_lag"] == 0
        print(
            f"{applied_end - back:,} records lost and applied again "
            f"{time.monotonic() - restored_at:.1f} s after the rollback"
        )
        assert_exact(env, [worker])
        metrics = worker.get("/metrics", port=worker.metrics_port).decode()
        went_back = [
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("presale_store_went_back_total{")
        ]
        assert sum(went_back) >= 1, metrics[-2000:]
    finally:
        worker.stop()
        client.close()


def snapshot_key(env: Env, name: str) -> str:
    return f"presale:{{{env.vars['PRESALE_CAMPAIGN_ID']}}}:{name}"


def test_kafka_broker_restarted() -> None:
    """The Kafka broker is stopped mid-replay and started again: the worker and
    the replay ride it out; exact report."""
    env = Env(recording_env(NAME))
    worker = Worker(env, "w").start()
    replay = env.background("replay", "--quiet", "--speed", PACED, str(FILE))
    try:
        time.sleep(4)
        services("down", "kafka")
        time.sleep(1)
        services("up")
        finish(replay)
        assert_exact(env, [worker])
    finally:
        worker.stop()
