"""Two faults at once (issue 13, hole c): Redis loses its last seconds while a
rebalance moves partitions between workers.

A worker that had a batch in flight when its partition moved can find, on
redoing it, that the new owner has applied past it; if Redis then loses the
new owner's steps, the old worker's next batch begins past the stored offset.
The atomic step refuses a plan that does not begin right after the stored
offset, and the worker reads the partition again from there, so no record is
skipped.
"""

from __future__ import annotations

import time

import pytest
import redis

from tests.integration.test_exactly_once import (
    FILE,
    NAME,
    PACED,
    assert_exact,
    finish,
    snapshot_key,
)
from tests.support.services import REDIS, Env, Worker, recording_env

pytestmark = pytest.mark.integration

# A snapshot of the campaign's keys with their time to live, put back as Redis
# itself would after losing its last seconds: a key that expires (the outbox
# lease of a worker that has since stopped) still expires.
SNAPSHOT_LUA = """
local out = {}
for _, k in ipairs(redis.call('KEYS', ARGV[1])) do
  out[#out + 1] = k
  out[#out + 1] = redis.call('DUMP', k)
  out[#out + 1] = math.max(redis.call('PTTL', k), 0)
end
return out
"""
RESTORE_LUA = """
for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end
for i = 2, #ARGV, 3 do redis.call('RESTORE', ARGV[i], ARGV[i + 2], ARGV[i + 1]) end
return (#ARGV - 1) / 3
"""


def test_redis_rolled_back_while_a_rebalance_runs() -> None:
    """3 workers over 6 partitions a topic; mid-replay a fourth joins and one
    stops, and while they rebalance the campaign's keys are put back to a
    snapshot taken seconds earlier: exact report, each milestone published
    once."""
    env = Env(recording_env(NAME))
    prefix = f"presale:\\{{{env.vars['PRESALE_CAMPAIGN_ID']}\\}}:*"  # glob-escaped
    client = redis.Redis.from_url(REDIS)
    pool = [Worker(env, f"c{i}").start() for i in range(3)]
    replay = env.background("replay", "--quiet", "--speed", PACED, str(FILE))
    try:
        time.sleep(4)
        snapshot = client.eval(SNAPSHOT_LUA, 0, prefix)
        applied_then = sum(int(v) for v in client.hvals(snapshot_key(env, "off")))
        time.sleep(2)
        pool.append(Worker(env, "c3").start(wait=False))
        pool[0].stop()
        time.sleep(1)  # the rebalance is under way
        applied_later = sum(int(v) for v in client.hvals(snapshot_key(env, "off")))
        assert client.eval(RESTORE_LUA, 0, prefix, *snapshot) > 0
        assert applied_later > applied_then, "nothing was applied between the two"
        pool[3].wait_ready()
        finish(replay)
        alive = [w for w in pool if w.proc and w.proc.poll() is None]
        assert len(alive) == 3
        assert_exact(env, alive)
    finally:
        for w in pool:
            w.stop()
        client.close()
