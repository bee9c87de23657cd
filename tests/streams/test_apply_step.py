"""The production Lua step fails whole or applies whole (hole d of issue 13).

Redis does not roll a script back when a command fails halfway: the step reads
and checks every key before its first write, and writes the offsets last.
Runs in a Redis of the test session's own (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
from redis.exceptions import ResponseError, TryAgainError

from processors.counting import Record, plan_batch
from streams.store import RedisStore, _transient
from tests.processors.make import T0, click, order, rules


def _keys(client: redis.Redis, prefix: str) -> dict[bytes, bytes | None]:
    pattern = prefix.replace("{", "\\{").replace("}", "\\}") + "*"
    return {k: client.dump(k) for k in sorted(client.scan_iter(match=pattern))}


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("u:ch:other", "hash"),  # buyers: a set, then a HyperLogLog
        ("u:bc:b1:other", "string"),  # a string that is not a HyperLogLog
        ("agg", "string"),  # the stream of the shard's aggregates
        ("bc:b1", "string"),  # a counter hash
        ("rgs", "string"),  # the regions the campaign admitted
        # the facets' hashes: regions (a region not decided yet counts in
        # `rgp` until the campaign decides it), first hour, minutes
        ("rgp", "string"),
        ("fhc", "string"),
        ("mn", "string"),
        ("u:rg:unknown", "hash"),  # a region's buyers
    ],
)
def test_a_step_that_would_fail_halfway_changes_nothing(
    step_redis_url: str, key: str, kind: str
) -> None:
    """A key of the wrong type, met after the offsets and the dedupe sets would
    have been written, fails the step before any write: the offsets stay where
    they were and no other key appears or changes (the step fails on today's
    code with the offsets advanced and the dedupe ids stored)."""
    campaign = rules()
    prefix = f"t:{{{uuid.uuid4().hex}}}:"
    client = redis.Redis.from_url(step_redis_url)
    if kind == "string":
        client.set(prefix + key, "not mine")
    else:
        client.hset(prefix + key, "x", "1")
    before = _keys(client, prefix)
    records: list[Record] = [
        ("orders:0", 0, order("o1", 2_000, ts=T0 + 1)),
        ("clicks:0", 0, click("c1", ts=T0 + 2)),
    ]
    plan = plan_batch(records, campaign, {})

    async def apply() -> None:
        store = RedisStore.from_url(step_redis_url, prefix, campaign)
        try:
            await store.apply(plan, 0)
        finally:
            await store.close()

    with pytest.raises(ResponseError, match="WRONGTYPE"):
        asyncio.run(apply())
    after = _keys(client, prefix)
    if key != "rgs":
        # A region is admitted campaign-wide before the step, for good (as it
        # would be by the step's retry): not a write of the step.
        after = {k: v for k, v in after.items() if not k.endswith(b":rgs")}
    assert after == before
    client.close()


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("brands", "string"),  # a set the fold only adds to
        ("rank", "hash"),  # a sorted set it only increments
        ("fh", "hash"),  # the first-hour GMV milestones are decided on
        ("ms", "string"),  # the milestones reached
        ("outbox", "string"),  # the stream milestones go to
        ("folded", "string"),  # the shards' last aggregates folded
    ],
)
def test_a_fold_that_would_fail_halfway_changes_nothing_and_runs_later(
    step_redis_url: str, key: str, kind: str
) -> None:
    """A campaign-wide key of the wrong type fails the fold before any write:
    the shard's step stands (its aggregate waits in the shard's stream), no
    campaign-wide key changes, and once the key is mended the pending fold
    moves the aggregate over exactly once: one milestone, the rank once."""
    campaign = rules(thresholds_fen=(1_000,))
    prefix = f"t:{{{uuid.uuid4().hex}}}:"
    client = redis.Redis.from_url(step_redis_url)
    if kind == "string":
        client.set(prefix + key, "not mine")
    else:
        client.hset(prefix + key, "x", "1")
    wide = [prefix + k for k in ("brands", "rank", "fh", "ms", "outbox", "folded")]
    before = {k: client.dump(k) for k in wide}
    records: list[Record] = [("orders:0", 0, order("o1", 2_000, ts=T0 + 1))]

    async def run() -> tuple[list[object], list[object]]:
        store = RedisStore.from_url(step_redis_url, prefix, campaign)
        try:
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                await store.apply(store.plan(records, {}), 0)
            assert {k: client.dump(k) for k in wide} == before
            assert client.xlen(prefix + "agg") == 1
            client.delete(prefix + key)
            first = await store.fold_pending(0)
            again = await store.fold_pending(0)
            return list(first), list(again)
        finally:
            await store.close()

    first, again = asyncio.run(run())
    assert [(m.kind, m.brand_id) for m in first] == [("gmv_threshold", "b1")]
    assert again == []
    assert client.zscore(prefix + "rank", "b1") == 2_000
    assert client.xlen(prefix + "outbox") == 1
    client.close()


@pytest.mark.parametrize(
    ("text", "again"),
    [
        (
            "Error running script: Script attempted to access a non local key in"
            " a cluster node script",
            True,
        ),
        ("Script attempted to execute a command while the cluster is down", True),
        ("WRONGTYPE presale:{x}:brands holds a string, not a set", False),
    ],
)
def test_a_step_refused_by_a_moving_slot_is_tried_again(text: str, again: bool) -> None:
    """A slot migrated mid-step is a passing fault (the worker retries the
    batch); a key of the wrong type is not."""
    assert isinstance(_transient(ResponseError(text)), TryAgainError) == again
