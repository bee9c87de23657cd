"""`make bench-soak`: one presale worker over 10M events, its RSS sampled.

Loads 74 copies of the first-hour recording (10,021,376 records) into fresh
topics, starts one worker and samples its resident memory (VmRSS) and applied
records every 2 s until it has applied them all. The first 10% of the records
are the warm-up (imports, connection buffers, the first batches' peak); after
it, RSS must stay within 10% of its value at the end of the warm-up.

The dedupe sets get 2,048 shards here, as docs/exactly-once.md advises above
8M ids a generation (9.3M ids are counted), so they stay compact intsets.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from bench.kafka_io import create_topics, delete_topics, load
from bench.measure import Processes, RunFailed
from bench.procstat import cpu_seconds, machine, peak_rss_bytes, rss_bytes
from bench.systems import (
    REDIS_URL,
    applied_records,
    delete_keys,
    presale_check,
    presale_env,
    start_worker,
)
from bench.workload import CACHE_DIR, Workload

SAMPLE_S = 2.0
WARMUP_SHARE = 0.10
FLAT_WITHIN = 0.10


@dataclass(frozen=True, slots=True)
class RssSample:
    at_s: float
    applied: int
    rss_bytes: int


async def soak(records: int) -> int:
    stamp = time.strftime("%m%d%H%M") + secrets.token_hex(2)
    info = machine()
    print(
        f"presale soak {stamp}: {info['cpus']} CPUs ({info['cpu_model']}), "
        f"{info['memory']}"
    )
    workload = Workload.load()
    copies = workload.copies_for(records)
    want = workload.totals(copies)
    topic_prefix = campaign = f"bench-{stamp}-soak"
    client = aioredis.Redis.from_url(REDIS_URL)
    procs = Processes(CACHE_DIR / "logs" / stamp)
    samples: list[RssSample] = []
    try:
        await create_topics(topic_prefix)
        loaded = await load(topic_prefix, workload.records(copies))
        print(
            f"loaded {loaded.records:,} records ({copies} copies) in "
            f"{loaded.seconds:.1f} s ({loaded.rate:,.0f} records/s)",
            flush=True,
        )
        env = presale_env(topic_prefix, campaign, PRESALE_DEDUPE_SHARDS="2048")
        worker = start_worker(procs, env, f"soak-{stamp}")
        started = time.perf_counter()
        deadline = started + 60 + loaded.records / 5_000
        next_print = 0.0
        while True:
            if worker.poll() is not None:
                raise RunFailed(f"the worker exited with {worker.returncode}")
            applied = await applied_records(client, campaign)
            rss = rss_bytes(worker.pid) or 0
            now = time.perf_counter()
            samples.append(RssSample(now - started, applied, rss))
            if now >= next_print:
                print(
                    f"  {now - started:6.0f} s  {applied:>12,} applied  "
                    f"RSS {rss / 2**20:6.1f} MiB",
                    flush=True,
                )
                next_print = now + 20
            if applied >= loaded.records:
                break
            if now > deadline:
                raise RunFailed(f"{applied:,} of {loaded.records:,} after the limit")
            await asyncio.sleep(SAMPLE_S)
        elapsed = samples[-1].at_s
        cpu = cpu_seconds(worker.pid) or 0.0
        peak = peak_rss_bytes(worker.pid) or 0
        check = await presale_check(env, want)
        await procs.stop([worker])
    finally:
        procs.kill_all()
        await delete_keys(client, f"presale:{{{campaign}}}:")
        await client.aclose()
        await delete_topics(topic_prefix)

    warm = [s for s in samples if s.applied >= WARMUP_SHARE * loaded.records]
    if len(warm) < 3:
        print("too few samples after the warm-up to judge")
        return 1
    base = warm[0].rss_bytes
    high = max(s.rss_bytes for s in warm)
    low = min(s.rss_bytes for s in warm)
    drift = max(high / base - 1, 1 - low / base)
    flat = drift <= FLAT_WITHIN
    print(
        f"\n{loaded.records:,} records in {elapsed:.0f} s "
        f"({loaded.records / elapsed:,.0f} events/s including start-up), worker "
        f"CPU {cpu:.0f} s, peak RSS {peak / 2**20:.0f} MiB; counters: {check}"
    )
    print(
        f"RSS after the warm-up ({WARMUP_SHARE:.0%} of the records, "
        f"{len(warm)} samples): {base / 2**20:.1f} MiB at its end, "
        f"{low / 2**20:.1f}-{high / 2**20:.1f} MiB after, final "
        f"{warm[-1].rss_bytes / 2**20:.1f} MiB"
    )
    half = next(s for s in warm if s.applied >= loaded.records / 2)
    late = warm[-1].rss_bytes / half.rss_bytes - 1
    print(
        f"second half: {half.rss_bytes / 2**20:.1f} MiB at 50% of the records, "
        f"{warm[-1].rss_bytes / 2**20:.1f} MiB at the end ({late:+.1%}): a step "
        "once, or steady growth (a leak), shows here"
    )
    verdict = "FLAT" if flat else "NOT flat"
    print(f"RSS stays within {FLAT_WITHIN:.0%}: {verdict} (largest drift {drift:.1%})")
    return 0 if flat and check == "ok" else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    p.add_argument("--records", type=int, default=10_000_000, help="at least")
    args = p.parse_args(argv)
    return asyncio.run(soak(args.records))


if __name__ == "__main__":
    sys.exit(main())
