"""What one batch costs in the planner, the plan's encoding and the Lua step.

Decodes the first-hour recording once, cuts it into batches of 40,000 records
(the worker's PRESALE_BATCH_MAX_RECORDS) spread over 6 partitions a topic, and
times, per event, in CPU time (so other work on the machine moves it less):
`plan_batch` and `encode_plan` in this process, and the atomic step in Redis
(`RedisStore.apply`), as the Redis server's own CPU (`INFO cpu`) over the round.
Each round applies the whole recording to a fresh campaign prefix; the figure
is the median of the rounds. Run it against two checkouts in one session to
compare code before and after a change:

    PYTHONPATH=<checkout> python -m bench.step_cost --redis-url redis://... --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

from processors.counting import Plan, Record
from streams.codecs import decode
from streams.recordings import iter_records
from streams.settings import Settings, read_settings_file
from streams.store import RedisStore, encode_plan

STREAMS = Path(__file__).resolve().parent.parent / "seeds" / "streams"
BATCH = 40_000
PARTITIONS = 6


def load(name: str) -> tuple[Settings, list[list[Record]]]:
    settings_file = STREAMS / f"{name}.settings.json"
    settings = Settings.from_env(read_settings_file(str(settings_file)))
    offsets: dict[str, int] = {}
    records: list[Record] = []
    for i, (topic, _key, value) in enumerate(
        iter_records(STREAMS / f"{name}.jsonl.gz")
    ):
        tp = f"{topic}:{i % PARTITIONS}"
        offsets[tp] = offsets.get(tp, -1) + 1
        records.append(
            (tp, offsets[tp], decode(value, topic, settings.max_record_bytes))
        )
    batches = []
    for start in range(0, len(records), BATCH):
        batch = records[start : start + BATCH]
        batch.sort(key=lambda r: r[0])  # runs of one partition, as fetched
        batches.append(batch)
    return settings, batches


async def redis_cpu_s(store: RedisStore) -> float:
    """The Redis server's CPU seconds so far (user and system, main thread)."""
    info = await store.client.info("cpu")
    return float(info["used_cpu_user_main_thread"]) + float(
        info["used_cpu_sys_main_thread"]
    )


async def one_round(
    url: str, settings: Settings, batches: list[list[Record]], shards: int = 1
) -> tuple[float, float, float, int]:
    rules = replace(settings.rules, state_shards=shards)
    prefix = f"bench:{{{uuid.uuid4().hex}}}:"
    store = RedisStore.from_url(url, prefix, rules)
    plan_s = encode_s = 0.0
    events = 0
    try:
        cpu_before = await redis_cpu_s(store)
        for batch in batches:
            applied = await store.applied_offsets(sorted({tp for tp, _o, _v in batch}))
            t0 = time.process_time()
            plan = store.plan(batch, applied)
            t1 = time.process_time()
            for part in getattr(plan, "parts", [plan]):
                if isinstance(part, Plan):
                    encode_plan(part, rules)
            t2 = time.process_time()
            result = await store.apply(plan, 0)
            assert type(result).__name__ == "Applied", result
            plan_s += t1 - t0
            encode_s += t2 - t1
            events += len(batch)
        step_s = await redis_cpu_s(store) - cpu_before
        await store.reset()
    finally:
        await store.close()
    return plan_s, encode_s, step_s, events


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.step_cost")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--recording", default="first-hour")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--shards", type=int, default=1, help="PRESALE_STATE_SHARDS")
    args = p.parse_args(argv)
    settings, batches = load(args.recording)
    rows = [
        asyncio.run(one_round(args.redis_url, settings, batches, args.shards))
        for _ in range(args.rounds)
    ]
    n = rows[0][3]
    plan_us, encode_us, step_us = (
        statistics.median(r[i] for r in rows) / n * 1e6 for i in range(3)
    )
    print(
        f"{n:,} records in {len(batches)} batches, median of {args.rounds} rounds:"
        f" plan {plan_us:.2f} µs, encode {encode_us:.2f} µs,"
        f" Lua step (Redis CPU) {step_us:.2f} µs a record"
        f" (total {plan_us + encode_us + step_us:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
