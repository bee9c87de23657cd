"""The surge judge's memory is bounded however many cells a minute holds
(issue 16), and it still raises exactly what the batch detector raises.

Before the fix the judge read every cell of every minute of its 12-minute
window into dicts (`HGETALL`): one minute of 200,000 brands peaked at 61.9 MiB
(tracemalloc), so a million brands a minute, over a 12-minute window, needed
gigabytes. Now it reads the cells that reach `min_count` by HSCAN, 5,000 at a
time, and their window by HMGET: the peak stays under 8 MiB.
"""

from __future__ import annotations

import asyncio
import random
import tracemalloc
import uuid

import pytest
import redis.asyncio as aioredis

from processors.surge import MINUTE_MS, SurgeRules, detect
from streams.alerts import SurgeJudge
from streams.metrics import Metrics
from streams.store import glob_escape
from tests.support.services import REDIS

pytestmark = pytest.mark.integration

T0 = 1_760_529_600_000  # a whole minute
RULES = SurgeRules()
QUIET = 200_000  # brands with 1 click in the judged minute: none can surge


def test_judge_memory_is_bounded_and_its_alerts_exact() -> None:
    async def main() -> None:
        rng = random.Random(16)
        prefix = f"presale:{{surge-{uuid.uuid4().hex[:8]}}}:"
        client = aioredis.Redis.from_url(REDIS)
        counts: dict[int, dict[tuple[str, str], int]] = {}
        minutes = [T0 + i * MINUTE_MS for i in range(14)]
        judged = minutes[-1]
        # 300 busy brands: steady for 12 minutes; 40 of them step up x3 in the
        # last two minutes (a surge each), the rest stay noisy around 60.
        for i, m in enumerate(minutes):
            cells = counts.setdefault(m, {})
            for b in range(300):
                level = 60 if i < 12 or b >= 40 else 180
                cells[("brand", f"busy{b:03d}")] = level + rng.randrange(-3, 4)
        quiet = {("brand", f"q{b:06d}"): 1 for b in range(QUIET)}
        try:
            for m in minutes:
                cells = dict(counts[m])
                if m == judged:
                    cells.update(quiet)
                items = [(f"{s}|{k}", v) for (s, k), v in cells.items()]
                for i in range(0, len(items), 20_000):
                    await client.hset(
                        f"{prefix}sm:{m}", mapping=dict(items[i : i + 20_000])
                    )
                await client.zadd(prefix + "sm:idx", {str(m): m})
            # the surge clock: well past the judged minute
            now_ms = judged + 10 * MINUTE_MS
            await client.hset(prefix + "clock", "clicks:0", f"{now_ms}:{now_ms}")
            await client.hset(prefix + "meta", "surge_through", str(minutes[-2]))

            async def no_records_in_kafka() -> dict[str, int]:
                return {}  # the clock's partition is caught up (and long idle)

            judge = SurgeJudge(
                client,
                prefix,
                RULES,
                T0,
                0,
                None,
                Metrics.create(),
                no_records_in_kafka,
            )
            tracemalloc.start()
            try:
                raised = await judge.judge()
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            counts[judged].update(quiet)
            want = [c for c in detect(counts, RULES, T0) if c.minute_ms == judged]
            assert sorted(a["key"] for a in raised) == sorted(c.key for c in want)
            assert len(raised) == 40
            assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"
        finally:
            keys = [k async for k in client.scan_iter(match=glob_escape(prefix) + "*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()

    asyncio.run(main())
