"""The worker's stream path over each committed recording, without Kafka: the
worker's decoder, planner and atomic step (the production Lua in a Redis of the
test session's own, and the in-memory store) give the report the independent
reference expects, crossed_at_ms included, whatever the batching.

A report field must be the same for the same input, whatever the batching: each
recording is cut into batches of random sizes under two seeds.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import replace
from typing import Any

import pytest

from processors.counting import Record
from streams.check import check
from streams.codecs import decode
from streams.recordings import iter_records
from streams.settings import Settings
from streams.store import MemoryStore, RedisStore, Store
from tests.support.services import STREAMS, recording_env


def replay_in_batches(
    store: Store, settings: Settings, name: str, seed: int
) -> dict[str, Any]:
    """Decode, plan and apply the recording in file order (one partition a
    topic), in batches of 1 to 8,000 records; the store's report."""
    limit = settings.max_record_bytes
    offsets: dict[str, int] = {}
    records: list[Record] = []
    for topic, _key, value in iter_records(STREAMS / f"{name}.jsonl.gz"):
        tp = f"{topic}:0"
        offsets[tp] = offsets.get(tp, -1) + 1
        records.append((tp, offsets[tp], decode(value, topic, limit)))
    rng = random.Random(seed)

    async def run() -> dict[str, Any]:
        position = 0
        while position < len(records):
            size = rng.choice((1, 7, 100, 1_000, 8_000))
            batch = records[position : position + size]
            applied = await store.applied_offsets(sorted(offsets))
            result = await store.apply(store.plan(batch, applied), 0)
            assert type(result).__name__ == "Applied", result
            position += size
        return await store.report()

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("where", "name", "seed"),
    [
        ("lua", "small", 1),
        ("lua", "small", 2),
        ("lua", "first-hour", 1),
        ("lua", "first-hour", 2),
        # Twelve state shards in one Redis: each batch split into the shards'
        # steps and the fold, as on a Redis Cluster.
        ("lua-shards", "small", 1),
        ("lua-shards", "first-hour", 2),
        # The in-memory store, slower, on the small recording only.
        ("memory", "small", 1),
        ("memory", "small", 2),
    ],
)
def test_stream_path_matches_the_reference(
    name: str, seed: int, where: str, step_redis_url: str
) -> None:
    """Every counter, late and out_of_window, the milestones with their
    crossed_at_ms, and the dead letters by reason: as the reference expects."""
    settings = Settings.from_env(recording_env(name))
    want = json.loads((STREAMS / f"{name}.expected.json").read_text())
    store: Store
    if where.startswith("lua"):
        prefix = f"t:{{{uuid.uuid4().hex}}}:"
        shards = 12 if where == "lua-shards" else 1
        campaign = replace(settings.rules, state_shards=shards)
        store = RedisStore.from_url(step_redis_url, prefix, campaign)
    else:
        store = MemoryStore(settings.rules)
    live = replay_in_batches(store, settings, name, seed)
    assert check(live, want, crossed=True) == []
