"""A worker dies between a batch's shard steps and its fold (issue 14).

A campaign's state is split into state shards, each batch applied by one
atomic step per shard and then one fold into the campaign's slot (the rank,
the first-hour GMV milestones are decided on). Here a worker applies some of a
batch's shard steps, or all of them, and dies before the fold; another worker
(a new store, as after a restart) reads the offsets, plans the records again
in batches cut elsewhere, and goes on. The production Lua runs in a Redis of
the test session's own. The report must equal the independent reference's:
nothing lost, nothing doubled, every milestone once.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import replace
from typing import Any

import pytest
import redis

from processors.counting import Record, ShardedPlan
from streams.check import check
from streams.codecs import decode
from streams.recordings import iter_records
from streams.settings import Settings
from streams.store import RedisStore, glob_escape
from tests.support.services import STREAMS, recording_env

NAME = "first-hour"
SHARDS = 6


def recorded(settings: Settings) -> tuple[list[Record], list[str]]:
    offsets: dict[str, int] = {}
    records: list[Record] = []
    for topic, _key, value in iter_records(STREAMS / f"{NAME}.jsonl.gz"):
        tp = f"{topic}:0"
        offsets[tp] = offsets.get(tp, -1) + 1
        records.append(
            (tp, offsets[tp], decode(value, topic, settings.max_record_bytes))
        )
    return records, sorted(offsets)


async def crash_between(store: RedisStore, plan: ShardedPlan, keep: set[int]) -> None:
    """The shard steps of `keep` only, and no fold: the worker dies there."""
    parts = [(s, p) for s, p in enumerate(plan.parts) if p is not None and s in keep]
    steps = await store._step_args(parts, plan.samples)
    for s, _part, keys, payload in steps:
        outcome = await store._run_step(s, keys, payload, 0)
        assert type(outcome).__name__ == "_Step", outcome


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_worker_dies_between_the_shard_steps_and_the_fold(
    seed: int, step_redis_url: str
) -> None:
    settings = Settings.from_env(recording_env(NAME))
    campaign = replace(settings.rules, state_shards=SHARDS)
    want = json.loads((STREAMS / f"{NAME}.expected.json").read_text())
    records, partitions = recorded(settings)
    prefix = f"t:{{{uuid.uuid4().hex}}}:"
    rng = random.Random(seed)

    async def run() -> dict[str, Any]:
        store = RedisStore.from_url(step_redis_url, prefix, campaign)
        crashes = 0
        try:
            position = 0
            while position < len(records):
                batch = records[position : position + rng.choice((500, 3_000, 9_000))]
                applied = await store.applied_offsets(partitions)
                plan = store.plan(batch, applied)
                assert isinstance(plan, ShardedPlan)
                if crashes < 4 and rng.random() < 0.3:
                    # Some shards' steps (or all of them), no fold; a new
                    # worker reads again from the lowest shard's offsets.
                    keep = {s for s in range(SHARDS) if rng.random() < 0.6}
                    keep = keep if crashes % 2 else set(range(SHARDS))
                    await crash_between(store, plan, keep)
                    crashes += 1
                    await store.close()
                    store = RedisStore.from_url(step_redis_url, prefix, campaign)
                    fresh = await store.applied_offsets(partitions)
                    position = _resume_at(records, fresh)
                    continue
                result = await store.apply(plan, 0)
                assert type(result).__name__ == "Applied", result
                position += len(batch)
            assert crashes >= 2
            # The last crash may have left aggregates no later step folded:
            # the worker's lag timer folds them.
            await store.fold_pending(0)
            return await store.report()
        finally:
            await store.close()

    live = asyncio.run(run())
    assert check(live, want) == []


def _resume_at(records: list[Record], applied: dict[str, int]) -> int:
    """The first record past the offsets the campaign applied through."""
    for i, (tp, offset, _decoded) in enumerate(records):
        if offset > applied.get(tp, -1):
            return i
    return len(records)


def test_the_campaigns_slot_loses_its_last_folds(step_redis_url: str) -> None:
    """The campaign's slot goes back a few batches (its master restarted from
    an AOF written every second) while the shards keep theirs: the next fold
    finds the aggregates it lost in the shards' streams, which keep the last
    ones folded, and folds them again. The milestones and everything else end
    as the reference's."""
    settings = Settings.from_env(recording_env(NAME))
    campaign = replace(settings.rules, state_shards=SHARDS)
    want = json.loads((STREAMS / f"{NAME}.expected.json").read_text())
    records, partitions = recorded(settings)
    prefix = f"t:{{{uuid.uuid4().hex}}}:"
    client = redis.Redis.from_url(step_redis_url)
    own = glob_escape(prefix) + "*"  # the campaign's own keys, not its shards'
    batches = [records[i : i + 4_000] for i in range(0, len(records), 4_000)]

    async def run() -> dict[str, Any]:
        store = RedisStore.from_url(step_redis_url, prefix, campaign)
        saved: dict[bytes, bytes] = {}
        try:
            for n, batch in enumerate(batches):
                if n == len(batches) // 2:  # the campaign's keys as of now
                    saved = _saved(client, own)
                if n == len(batches) // 2 + 3:  # ...and back there
                    _put_back(client, own, saved)
                applied = await store.applied_offsets(partitions)
                result = await store.apply(store.plan(batch, applied), 0)
                assert type(result).__name__ == "Applied", result
            return await store.report()
        finally:
            await store.close()

    live = asyncio.run(run())
    client.close()
    assert saved_any(prefix, step_redis_url)
    assert check(live, want) == []


def _saved(client: redis.Redis, pattern: str) -> dict[bytes, bytes]:
    """The keys `pattern` matches, dumped."""
    return {k: client.dump(k) for k in client.scan_iter(pattern)}


def _put_back(client: redis.Redis, pattern: str, saved: dict[bytes, bytes]) -> None:
    """The keys `pattern` matches as they were saved, as Redis would have them
    after losing its writes since: later keys gone, earlier ones restored."""
    for key in list(client.scan_iter(pattern)):
        client.delete(key)
    for key, value in saved.items():
        client.restore(key, 0, value)


def saved_any(prefix: str, url: str) -> bool:
    """The campaign's slot holds its milestones again."""
    client = redis.Redis.from_url(url)
    try:
        return bool(client.hlen(prefix + "ms"))
    finally:
        client.close()


@pytest.mark.parametrize(("shards", "depth"), [(1, 1), (1, 6), (6, 1), (6, 6)])
def test_redis_loses_a_step_before_its_fold(
    shards: int, depth: int, step_redis_url: str
) -> None:
    """Redis loses its last writes, all of them (a restart from an AOF written
    every second), after a batch's steps and before its fold: the worker still
    holds the batch's aggregates, but the shards no longer hold the step that
    made them. The fold must not take them (the records are applied again, and
    make new ones), nor skip what the shards append next; `depth` batches are
    lost. The report ends as the reference's."""
    settings = Settings.from_env(recording_env(NAME))
    campaign = replace(settings.rules, state_shards=shards)
    want = json.loads((STREAMS / f"{NAME}.expected.json").read_text())
    records, partitions = recorded(settings)
    tag = uuid.uuid4().hex
    prefix = f"t:{{{tag}}}:"
    everything = glob_escape(f"t:{{{tag}") + "*"  # the campaign's keys and its shards'
    client = redis.Redis.from_url(step_redis_url)
    size = 4_000
    lose_at = len(records) // size // 2

    async def run() -> dict[str, Any]:
        store = RedisStore.from_url(step_redis_url, prefix, campaign)
        saved: dict[bytes, bytes] = {}
        fold = store._fold
        lost = 0

        async def fold_after_a_loss(**kwargs: Any) -> Any:
            nonlocal lost
            if not lost:  # back to `depth` batches ago, then the fold
                _put_back(client, everything, saved)
                lost += 1
            return await fold(**kwargs)

        try:
            position, n = 0, 0
            while position < len(records):
                if n == lose_at - depth + 1:  # every key as of now
                    saved = _saved(client, everything)
                if n == lose_at:
                    store._fold = fold_after_a_loss
                batch = records[position : position + size]
                applied = await store.applied_offsets(partitions)
                result = await store.apply(store.plan(batch, applied), 0)
                store._fold = fold
                n += 1
                if type(result).__name__ == "Stale":  # read again from the offsets
                    position = _resume_at(
                        records, await store.applied_offsets(partitions)
                    )
                    continue
                assert type(result).__name__ == "Applied", result
                position += len(batch)
            assert lost == 1
            await store.fold_pending(0)
            return await store.report()
        finally:
            await store.close()

    live = asyncio.run(run())
    client.close()
    assert check(live, want) == []
