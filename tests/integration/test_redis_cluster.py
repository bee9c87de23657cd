"""The worker and every CLI command against a real 3-master Redis Cluster: the
`small` recording replayed through the real Kafka gives exactly the expected
report, the campaign's state shards spread over every master (its own keys on
the one node owning its slot), milestones reach their topic once, and `presale
reset` finds and deletes them all."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from streams.check import check as check_report
from streams.keys import Layout
from tests.support.redis_servers import keys_by_node, redis_cluster
from tests.support.services import STREAMS, Env, recording_env, workers
from tests.support.topics import read_all

pytestmark = pytest.mark.integration

NAME = "small"


def glob(text: str) -> str:
    """`text` as a SCAN pattern (its braces escaped)."""
    return text.replace("{", "\\{").replace("}", "\\}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[int]]:
    with redis_cluster(3) as ports:
        yield ports


def test_replay_exact_on_redis_cluster(cluster: list[int]) -> None:
    """Counters exact (buyers within 2%), milestones exact and each published
    once, `presale check` passes; shards on every master; reset deletes them."""
    want = json.loads((STREAMS / f"{NAME}.expected.json").read_text())
    env = Env(
        {
            **recording_env(NAME),
            "PRESALE_REDIS_URL": f"redis://127.0.0.1:{cluster[1]}/0",
            "PRESALE_REDIS_CLUSTER": "1",
        }
    )
    with workers(env, 1) as running:
        env.replay(STREAMS / f"{NAME}.jsonl.gz")
        live = env.wait_applied(alive=running)
        assert live["consumer_lag"] == 0
        assert check_report(live, want) == []
        check = env.presale(
            "check", str(STREAMS / f"{NAME}.expected.json"), check=False
        )
        assert "the report equals" in check, check
        # The outbox publisher (on the cluster too) put each milestone out once.
        # It publishes in the background: poll until all are out (or 60 s).
        deadline = time.monotonic() + 60
        while True:
            records = read_all(env.topic("milestones"))
            ids = Counter(dict(r.headers)["presale-id"] for r in records)
            if len(records) >= len(want["milestones"]) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert sum(ids.values()) == len(want["milestones"])
        assert max(ids.values()) == 1

    campaign = env.vars["PRESALE_CAMPAIGN_ID"]
    wide = glob(f"presale:{{{campaign}}}:*")
    sharded = glob(f"presale:{{{campaign}:") + "*"
    by_node = keys_by_node(cluster, wide)
    holders = [port for port, n in by_node.items() if n]
    assert len(holders) == 1, by_node  # the campaign's own tag: one slot, one node
    # The state shards (12 by default on a cluster) spread over every master,
    # four each: each master holds shards' counters, dedupe ids and offsets.
    shard_keys = keys_by_node(cluster, sharded)
    assert all(n > 50 for n in shard_keys.values()), shard_keys
    probe = redis.Redis(port=cluster[0])
    offsets = [
        port
        for port in cluster
        for key in redis.Redis(port=port).scan_iter(match=sharded)
        if key.endswith(b":off")
    ]
    probe.close()
    assert sorted(Counter(offsets).values()) == [4, 4, 4], Counter(offsets)
    total = by_node[holders[0]] + sum(shard_keys.values())
    assert total > 100
    pattern = wide

    out = env.presale("reset")
    assert f"deleted {total:,} Redis keys" in out, (out, total)
    assert sum(keys_by_node(cluster, pattern).values()) == 0
    assert sum(keys_by_node(cluster, sharded).values()) == 0
    after = env.report()
    assert after["totals"]["orders"] == 0
    assert after["brands"] == []


def _migrate_slot(slot: int, source: int, target: int, pause_s: float) -> int:
    """Move one hash slot between two masters as `redis-cli --cluster reshard`
    does: IMPORTING / MIGRATING, MIGRATE of its keys 20 at a time (with a pause
    between, so steps run in the middle), then the slot's new owner on every
    node. Returns how many keys moved."""
    src = redis.Redis(port=source)
    dst = redis.Redis(port=target)
    src_id = src.execute_command("CLUSTER", "MYID").decode()
    dst_id = dst.execute_command("CLUSTER", "MYID").decode()
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    moved = 0
    while True:
        keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 20)
        if not keys:
            break
        src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
        moved += len(keys)
        time.sleep(pause_s)
    for node in (dst, src):
        node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    src.close()
    dst.close()
    return moved


def test_slot_migrated_mid_replay(cluster: list[int]) -> None:
    """Hole d: a state shard's slot, then the campaign's, move to another
    master while a paced replay runs and the worker applies steps: a step or a
    fold meets its keys on the move (TRYAGAIN, ASK, or a key no longer local),
    writes nothing and is retried; the report is exact and every milestone is
    published once."""
    want = json.loads((STREAMS / f"{NAME}.expected.json").read_text())
    env = Env(
        {
            **recording_env(NAME),
            "PRESALE_REDIS_URL": f"redis://127.0.0.1:{cluster[0]}/0",
            "PRESALE_REDIS_CLUSTER": "1",
        }
    )
    prefix = f"presale:{{{env.vars['PRESALE_CAMPAIGN_ID']}}}:"
    first_shard = Layout(prefix, 12).shard[0]
    probe = redis.Redis(port=cluster[0])
    slot = int(probe.execute_command("CLUSTER", "KEYSLOT", first_shard + "off"))
    wide_slot = int(probe.execute_command("CLUSTER", "KEYSLOT", prefix + "folded"))
    probe.close()
    with workers(env, 1) as running:
        replay = env.background(
            "replay", "--quiet", "--speed", "500", str(STREAMS / f"{NAME}.jsonl.gz")
        )
        time.sleep(4)  # steps are being applied
        # A shard's slot (its steps), then the campaign's (the folds).
        pattern = glob(first_shard + "*")
        owner = next(p for p, n in keys_by_node(cluster, pattern).items() if n)
        target = next(p for p in cluster if p != owner)
        moved = _migrate_slot(slot, owner, target, pause_s=0.05)
        wide = glob(prefix + "*")
        wide_owner = next(p for p, n in keys_by_node(cluster, wide).items() if n)
        wide_target = next(p for p in cluster if p != wide_owner)
        _migrate_slot(wide_slot, wide_owner, wide_target, pause_s=0.05)
        _out, err = replay.communicate(timeout=180)
        assert replay.returncode == 0, err[-2000:]
        live = env.wait_applied(alive=running)
        assert check_report(live, want) == []
        deadline = time.monotonic() + 60
        while True:
            records = read_all(env.topic("milestones"))
            if len(records) >= len(want["milestones"]) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        ids = Counter(dict(r.headers)["presale-id"] for r in records)
        assert sum(ids.values()) == len(want["milestones"])
        assert max(ids.values()) == 1
    by_node = keys_by_node(cluster, pattern)
    assert by_node[owner] == 0 and by_node[target] > 0, by_node
    assert moved > 50
    env.presale("reset")
