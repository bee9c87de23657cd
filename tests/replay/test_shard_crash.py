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

from processors.counting import Record, ShardedPlan
from streams.check import check
from streams.codecs import decode
from streams.recordings import iter_records
from streams.settings import Settings
from streams.store import RedisStore
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
