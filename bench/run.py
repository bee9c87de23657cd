"""`make bench`: presale's worker against three peers on one workload, one run.

For each system the workload is loaded into fresh topics (6 partitions each,
a unique prefix) and consumed `--runs` times from the start, each run with its
own campaign, consumer group and Redis keys:

  a  the ceiling: aiokafka `getmany` + orjson, no Redis
  b  a naive Faust agent, Redis per event (on a slice: it is slow)
  c  Quix Streams with a batching Redis sink
  d  `presale worker`, one process; then two processes over the same topics

then d's freshness under a paced load at half its measured rate, and a py-spy
profile of one more d run. It prints a table, the ratios and the targets of
issue 5, and writes `var/bench/results-<stamp>.json` (and `results-latest.json`).
`--only d` re-measures d alone and takes the peers' figures from the latest
results file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any, ClassVar

import redis.asyncio as aioredis

from bench import profile as profiling
from bench.freshness import Freshness, measure_freshness
from bench.kafka_io import (
    LoadResult,
    Record,
    create_topics,
    delete_topics,
    end_offsets,
    load,
)
from bench.measure import Measurement, Processes, RunFailed, Services, ServicesRestarted
from bench.procstat import machine
from bench.systems import REDIS_URL, RunResult, run_peer, run_presale, run_raw
from bench.workload import CACHE_DIR, REPO, Totals, Workload

LABELS = {
    "a": "a  raw aiokafka getmany + orjson (ceiling, no Redis)",
    "b": "b  naive Faust agent, Redis per event",
    "c": "c  Quix Streams, batching Redis sink",
    "d": "d  presale worker, 1 process",
    "d2": "d2 presale worker, 2 processes",
}
RETRIES = 2


@dataclass
class SystemResult:
    key: str
    records_loaded: int
    load_rate: float
    runs: list[Measurement] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    details: list[dict[str, float]] = field(default_factory=list)
    note: str = ""

    @property
    def rate(self) -> float:
        return statistics.median(m.rate for m in self.runs)

    def median_of(self, value: Callable[[Measurement], float | None]) -> float | None:
        values = [v for m in self.runs if (v := value(m)) is not None]
        return statistics.median(values) if values else None


class Topics:
    """One system's topics: loaded once, reloaded if a broker restart lost data."""

    created: ClassVar[list[Topics]] = []  # all of them: deleted even after a failure

    def __init__(self, prefix: str, make: Callable[[], Iterable[Record]]) -> None:
        Topics.created.append(self)
        self.base_prefix = prefix
        self.prefix = prefix
        self.make = make
        self.generation = 0
        self.loaded = 0

    async def load(self) -> LoadResult:
        await create_topics(self.prefix)
        result = await load(self.prefix, self.make())
        self.loaded = result.records
        return result

    async def intact(self) -> bool:
        return sum((await end_offsets(self.prefix)).values()) == self.loaded

    async def reload(self) -> None:
        await delete_topics(self.prefix)
        self.generation += 1
        self.prefix = f"{self.base_prefix}-r{self.generation}"
        await self.load()

    async def delete(self) -> None:
        await delete_topics(self.prefix)


async def attempt(
    services: Services,
    topics: Topics,
    what: str,
    run: Callable[[str, str], Awaitable[RunResult]],
    run_id: str,
) -> RunResult:
    """One measured run; again (up to RETRIES times) if Kafka or Redis restarted
    under it or it failed, on reloaded topics if the restart lost records."""
    for n in range(RETRIES + 1):
        before = await services.identity()
        try:
            result = await run(topics.prefix, f"{run_id}-{n}" if n else run_id)
            if await services.identity() != before:
                raise ServicesRestarted("Kafka or Redis restarted during the run")
            return result
        except RunFailed as exc:
            if n == RETRIES:
                raise
            print(f"  {what}: {exc}; measuring again", flush=True)
            await asyncio.sleep(3)
            if not await topics.intact():
                print("  the topics lost records in a broker restart: reloading")
                await topics.reload()
    raise AssertionError("unreachable")


def fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}"


def fmt_opt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_run(key: str, i: int, r: RunResult) -> None:
    m = r.measurement
    print(
        f"  {key} run {i}: {m.records:,} records in {m.seconds:.2f} s = "
        f"{fmt_rate(m.rate)}/s, CPU {m.per_million(m.cpu_s):.1f} s/M, "
        f"peak RSS {m.peak_rss_bytes / 2**20:.0f} MiB, started in "
        f"{m.startup_s:.1f} s, check: {r.check}",
        flush=True,
    )


def git_state() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "streams", "processors")
    note = " + uncommitted changes in streams/ or processors/" if dirty else ""
    return commit + note


async def bench_system(
    key: str,
    topics: Topics,
    want: Totals,
    runs: int,
    services: Services,
    body: Callable[[str, str], Awaitable[RunResult]],
    stamp: str,
) -> SystemResult:
    print(f"\n{LABELS[key]}", flush=True)
    loaded = await topics.load()
    print(
        f"  loaded {loaded.records:,} records into {topics.prefix}.* in "
        f"{loaded.seconds:.1f} s ({fmt_rate(loaded.rate)} records/s)",
        flush=True,
    )
    result = SystemResult(key, loaded.records, loaded.rate)
    for i in range(1, runs + 1):
        run_id = f"{stamp}-{key}{i}"
        r = await attempt(services, topics, f"{key} run {i}", body, run_id)
        print_run(key, i, r)
        result.runs.append(r.measurement)
        result.checks.append(r.check)
        result.details.append(r.details)
    return result


def print_table(results: dict[str, SystemResult]) -> None:
    header = (
        f"{'system':<52} {'events/s':>10} {'min-max':>17} {'CPU s/M':>8} "
        f"{'Redis s/M':>9} {'Kafka s/M':>9} {'RSS MiB':>8}"
    )
    print("\n" + header)
    print("-" * len(header))
    for key, r in results.items():
        rates = [m.rate for m in r.runs]
        cpu = r.median_of(lambda m: m.per_million(m.cpu_s))
        redis_cpu = r.median_of(lambda m: m.per_million(m.redis_cpu_s))
        kafka_cpu = r.median_of(lambda m: m.per_million(m.kafka_cpu_s))
        rss = max(m.peak_rss_bytes for m in r.runs) / 2**20
        span = f"{min(rates) / 1000:,.1f}k-{max(rates) / 1000:,.1f}k"
        print(
            f"{LABELS[key]:<52} {fmt_rate(r.rate):>10} {span:>17} "
            f"{fmt_opt(cpu):>8} {fmt_opt(redis_cpu):>9} {fmt_opt(kafka_cpu):>9} "
            f"{rss:>8.0f}"
        )
    for key, r in results.items():
        if r.note:
            print(f"  {key}: {r.note}")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def print_summary(
    results: dict[str, SystemResult], fresh: Freshness | None
) -> dict[str, float]:
    d = results["d"].rate
    ratios = {f"d/{k}": d / results[k].rate for k in ("a", "b", "c") if k in results}
    if "d2" in results:
        ratios["2 workers / 1"] = results["d2"].rate / d
    print()
    for name, value in ratios.items():
        print(f"{name:<14} {value:6.2f}")
    print("\nissue 5 targets for d on this machine:")
    print(f"  >= 100k events/s       {fmt_rate(d):>10}   {verdict(d >= 100_000)}")
    for name, goal in (("d/c", 2.0), ("d/b", 20.0), ("d/a", 0.5)):
        if name in ratios:
            value = ratios[name]
            print(f"  {name} >= {goal:<17} {value:>10.2f}   {verdict(value >= goal)}")
    if fresh is not None:
        print(
            f"  p99 freshness <= 1 s   {fresh.p99_s:>9.3f}s   "
            f"{verdict(fresh.p99_s <= 1.0)}"
        )
    checks = {k: c for k, r in results.items() for c in r.checks if c != "ok"}
    if checks:
        print(f"\ncounter checks that FAILED: {checks}")
    else:
        print("\nevery run's counters equal the reference's (seeds/reference.py)")
    return ratios


async def run_bench(args: argparse.Namespace) -> int:
    stamp = time.strftime("%m%d%H%M") + secrets.token_hex(2)
    only = set(args.only.split(",")) if args.only else {"a", "b", "c", "d"}
    info = machine()
    print(
        f"presale bench {stamp}: {info['cpus']} CPUs ({info['cpu_model']}), "
        f"{info['memory']}, kernel {info['kernel']}, load {os.getloadavg()[0]:.2f}"
    )
    shutil.rmtree(CACHE_DIR / "faust", ignore_errors=True)
    shutil.rmtree(CACHE_DIR / "faust-naive", ignore_errors=True)
    shutil.rmtree(CACHE_DIR / "quix-state", ignore_errors=True)
    workload = Workload.load()
    copies = workload.copies_for(args.records)
    want = workload.totals(copies)
    print(
        f"workload: {copies} copies of seeds/streams/first-hour.jsonl.gz = "
        f"{want.records:,} records ({want.counted['clicks']:,} clicks, "
        f"{want.counted['carts']:,} carts, {want.counted['orders']:,} orders, "
        f"{want.counted['cancels']:,} cancels counted; {want.duplicates:,} "
        f"duplicates, {want.dead_letters:,} malformed, {want.out_of_window:,} "
        f"outside the campaign)"
    )
    client = aioredis.Redis.from_url(REDIS_URL)
    services = Services(client)
    procs = Processes(CACHE_DIR / "logs" / stamp)
    results: dict[str, SystemResult] = {}
    fresh: Freshness | None = None
    profile_file = CACHE_DIR / f"profile-{stamp}.txt"
    d_commit = ""

    def full() -> Iterable[Record]:
        return workload.records(copies)

    try:
        if "a" in only:
            topics = Topics(f"bench-{stamp}-a", full)
            results["a"] = await bench_system(
                "a",
                topics,
                want,
                args.runs,
                services,
                lambda p, _run: run_raw(procs, p, want.records),
                stamp,
            )
            await topics.delete()
        if "b" in only:
            n = args.naive_records
            want_b = workload.slice_totals(n)
            topics = Topics(f"bench-{stamp}-b", lambda: islice(workload.records(1), n))
            results["b"] = await bench_system(
                "b",
                topics,
                want_b,
                args.runs,
                services,
                lambda p, run: run_peer(procs, client, "naive", p, want_b, run),
                stamp,
            )
            results["b"].note = (
                f"on the first {n:,} records only: its cost is per event (two "
                "Redis round trips each)"
            )
            await topics.delete()
        if "c" in only:
            topics = Topics(f"bench-{stamp}-c", full)
            results["c"] = await bench_system(
                "c",
                topics,
                want,
                args.runs,
                services,
                lambda p, run: run_peer(procs, client, "quix", p, want, run),
                stamp,
            )
            await topics.delete()
        if "d" in only:
            d_commit = git_state()
            print(f"\npresale worker code: {d_commit}")
            topics = Topics(f"bench-{stamp}-d", full)
            results["d"] = await bench_system(
                "d",
                topics,
                want,
                args.runs,
                services,
                lambda p, run: run_presale(procs, client, p, want, run),
                stamp,
            )
            if not args.no_scale:
                print(f"\n{LABELS['d2']} (the same topics, clock from a Stable group)")
                d2 = SystemResult("d2", topics.loaded, 0.0)
                for i in range(1, args.runs + 1):
                    run_id = f"{stamp}-w{i}"
                    r = await attempt(
                        services,
                        topics,
                        f"d2 run {i}",
                        lambda p, rid: run_presale(
                            procs, client, p, want, rid, workers=2
                        ),
                        run_id,
                    )
                    print_run("d2", i, r)
                    d2.runs.append(r.measurement)
                    d2.checks.append(r.check)
                d2.note = "CPU is both processes'; RSS the larger one's"
                results["d2"] = d2
            if not args.no_profile:
                print("\nprofiling one more d run with py-spy (not in the table)")
                r = await attempt(
                    services,
                    topics,
                    "profile run",
                    lambda p, rid: run_presale(
                        procs, client, p, want, rid, profile_to=profile_file
                    ),
                    f"{stamp}-prof",
                )
                print_run("d+py-spy", 1, r)
            await topics.delete()
            if not args.no_freshness:
                rate = results["d"].rate / 2
                print(f"\nfreshness of d at half its rate: {fmt_rate(rate)} events/s")
                fresh = await measure_freshness(procs, client, workload, stamp, rate)
                print(
                    f"  {fresh.probes:,} probes over {fresh.seconds:.0f} s at "
                    f"{fmt_rate(fresh.achieved)} events/s: p50 "
                    f"{fresh.p50_s * 1000:.0f} ms, p99 {fresh.p99_s * 1000:.0f} ms, "
                    f"max {fresh.max_s * 1000:.0f} ms, {fresh.lost} not seen; the "
                    f"worker used {fresh.worker_cpu_share:.0%} of a core"
                )
    finally:
        procs.kill_all()
        for topics in Topics.created:
            await topics.delete()
        await client.aclose()

    latest = CACHE_DIR / "results-latest.json"
    if "d" in results and only == {"d"} and latest.exists():
        before = json.loads(latest.read_text())
        for key in ("a", "b", "c"):
            if key in before["systems"]:
                results[key] = _system_from_json(before["systems"][key])
                # Once: a peer carried over again keeps the run it was measured in.
                if "(from bench " not in results[key].note:
                    results[key].note = (
                        results[key].note + f" (from bench {before['stamp']})"
                    ).strip()
    print_table(dict(sorted(results.items())))
    ratios = print_summary(results, fresh) if "d" in results else {}
    split = _median_details(results["d"].details) if "d" in results else {}
    if split:
        print("\nwhere d's wall time goes (medians of its runs):")
        print(
            f"  worker process on CPU        {split['worker_cpu_share']:6.1%} "
            "(decode, plan, encode, aiokafka, Faust)"
        )
        if "roundtrip_share" in split:
            print(
                f"  worker waiting for Redis     {split['roundtrip_share']:6.1%} "
                "(the atomic step's round trips)"
            )
        print(
            f"  Lua step running in Redis    {split['lua_share']:6.1%} "
            f"({split['lua_us_per_event']:.1f} us an event, Redis's commandstats)"
        )
        if "records_per_batch" in split:
            print(f"  records per batch            {split['records_per_batch']:,.0f}")
    if profile_file.exists():
        print("\nwhere d's worker CPU goes (py-spy, share of samples):")
        for stage, share in profiling.shares(profiling.categorize(profile_file)):
            print(f"  {share:6.1%}  {stage}")
    out = {
        "stamp": stamp,
        "machine": info,
        "presale_commit": d_commit,
        "workload_records": want.records,
        "systems": {k: _system_json(r) for k, r in results.items()},
        "ratios": ratios,
        "d_wall_time": split,
        "freshness": asdict(fresh) if fresh else None,
        "profile": (
            profiling.shares(profiling.categorize(profile_file))
            if profile_file.exists()
            else None
        ),
    }
    text = json.dumps(out, indent=2)
    (CACHE_DIR / f"results-{stamp}.json").write_text(text)
    latest.write_text(text)
    print(f"\nresults: var/bench/results-{stamp}.json")
    return 0


def _median_details(details: list[dict[str, float]]) -> dict[str, float]:
    keys = set.intersection(*(set(d) for d in details)) if details else set()
    return {k: statistics.median(d[k] for d in details) for k in keys}


def _system_json(r: SystemResult) -> dict[str, Any]:
    return {
        "records_loaded": r.records_loaded,
        "load_rate": r.load_rate,
        "median_rate": r.rate,
        "runs": [asdict(m) for m in r.runs],
        "checks": r.checks,
        "details": r.details,
        "note": r.note,
    }


def _system_from_json(raw: dict[str, Any]) -> SystemResult:
    result = SystemResult("", raw["records_loaded"], raw["load_rate"])
    result.runs = [Measurement(**m) for m in raw["runs"]]
    result.checks = raw["checks"]
    result.details = raw.get("details", [])
    result.note = raw["note"]
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--runs", type=int, default=3, help="measured runs per system")
    p.add_argument(
        "--records", type=int, default=2_000_000, help="workload size, at least"
    )
    p.add_argument(
        "--naive-records", type=int, default=50_000, help="b's slice of the workload"
    )
    p.add_argument("--only", help="comma list of a,b,c,d")
    p.add_argument("--no-scale", action="store_true", help="skip 2 workers vs 1")
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy run")
    p.add_argument("--no-freshness", action="store_true", help="skip freshness")
    args = p.parse_args(argv)
    try:
        return asyncio.run(run_bench(args))
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
