"""The surge clock through the real Lua step (`lua/apply.lua`): the same
records cut into batches of any size leave every partition the same clock,
which follows the bulk of the partition's events, never one ahead of it."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from processors.counting import Record, plan_batch
from processors.state import Applied
from streams.store import RedisStore
from tests.integration.helpers import campaign_keys
from tests.processors.make import T0, click, rules
from tests.support.services import REDIS

pytestmark = pytest.mark.integration

NOW_MS = T0 + 30 * 86_400_000  # the wall clock: long after the events
HOURS_AHEAD = 5 * 3_600_000


def stream() -> list[Record]:
    """700 clicks a partition on 3 partitions, interleaved in runs, one second
    apart with up to 3 s of disorder, 1% of them 5 hours ahead (two runs of 3
    among them), and a few rejected-window ones (before the start)."""
    rng = random.Random(13)
    per_tp: dict[str, list[Record]] = {}
    for p in range(3):
        tp = f"clicks:{p}"
        ahead = set(rng.sample(range(700), 3)) | {100, 101, 102, 400, 401, 402}
        recs: list[Record] = []
        for i in range(700):
            ts = T0 + i * 1000 + rng.randrange(3000)
            if i in ahead:
                ts += HOURS_AHEAD
            if i % 97 == 0:
                ts = T0 - 1  # out of the window: not counted
            recs.append((tp, i, click(f"{tp}-{i}", ts)))
        per_tp[tp] = recs
    out: list[Record] = []
    cursors = dict.fromkeys(per_tp, 0)
    while any(c < 700 for c in cursors.values()):
        tp = rng.choice([t for t, c in cursors.items() if c < 700])
        n = rng.randrange(1, 90)
        out.extend(per_tp[tp][cursors[tp] : cursors[tp] + n])
        cursors[tp] = min(700, cursors[tp] + n)
    return out


async def clocks_after(records: list[Record], size: int) -> dict[str, int]:
    campaign = rules(campaign_id=f"clock-{uuid.uuid4().hex[:8]}")
    prefix = f"presale:{{{campaign.campaign_id}}}:"
    store = RedisStore.from_url(REDIS, prefix, campaign)
    applied: dict[str, int] = {}
    try:
        for i in range(0, len(records), size):
            plan = plan_batch(records[i : i + size], campaign, applied)
            assert isinstance(await store.apply(plan, NOW_MS), Applied)
            for tp, (_before, last) in plan.offsets.items():
                applied[tp] = last
        raw = await store.client.hgetall(prefix + "clock")
        return {k.decode(): int(v.decode().partition(":")[0]) for k, v in raw.items()}
    finally:
        await store.reset()
        await store.close()
        assert campaign_keys(prefix) == []


def test_the_same_clock_whatever_the_batching() -> None:
    """Batches of 1, 10, 64, 333 and all 2,100 records give each partition the
    same clock: the lower median of its last complete chunk of 64 offsets
    (offsets 576-639), about 10 minutes after T0, never 5 hours ahead (fails
    before: the clock was each partition's latest event time, 5 h ahead)."""
    records = stream()
    results = [
        asyncio.run(clocks_after(records, size)) for size in (1, 10, 64, 333, 2100)
    ]
    assert all(r == results[0] for r in results), results
    for tp, ts in results[0].items():
        assert T0 + 600_000 <= ts <= T0 + 640_000, (tp, ts - T0)


def test_never_ahead_of_the_wall_clock() -> None:
    """A whole chunk ahead of the wall clock moves the clock only to the wall
    clock (the step's now)."""

    async def run() -> int:
        campaign = rules(campaign_id=f"clock-{uuid.uuid4().hex[:8]}")
        prefix = f"presale:{{{campaign.campaign_id}}}:"
        store = RedisStore.from_url(REDIS, prefix, campaign)
        try:
            records: list[Record] = [
                ("clicks:0", i, click(f"w{i}", T0 + 3_600_000)) for i in range(64)
            ]
            await store.apply(plan_batch(records, campaign, {}), T0 + 1000)
            raw = await store.client.hget(prefix + "clock", "clicks:0")
            return int(raw.decode().partition(":")[0])
        finally:
            await store.reset()
            await store.close()

    assert asyncio.run(run()) == T0 + 1000
