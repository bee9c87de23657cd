"""The four measured systems: how each is started, seen to progress, and checked.

a  `bench.raw_loop`: aiokafka `getmany` + orjson, no Redis (it times itself)
b  `bench.faust_naive`: a Faust agent, Redis per event
c  `bench.quix_peer`: Quix Streams, a batching Redis sink
d  `python -m streams.cli worker`: presale, one process (or several)

Each run gets its own campaign / consumer group and Redis keys, deleted after.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient

from bench.kafka_io import BOOTSTRAP, delete_topics
from bench.measure import Measurement, Processes, RunFailed, run_until_done
from bench.peer_counts import (
    DEAD_LETTER,
    DUPLICATE,
    EVENT_COUNTERS,
    OUT_OF_WINDOW,
    Keys,
    prefix,
)
from bench.procstat import cpu_seconds, service_pid
from bench.workload import CACHE_DIR, REPO, Totals, campaign_env

REDIS_URL = "redis://127.0.0.1:6379/0"
PYTHON = sys.executable


@dataclass(frozen=True, slots=True)
class RunResult:
    measurement: Measurement
    check: str  # "ok", or what differs from the reference
    # d only: where its wall time went (see `wall_time_split`)
    details: dict[str, float] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(campaign_env())
    env["PYTHONPATH"] = str(REPO)
    env["PRESALE_KAFKA_BOOTSTRAP"] = BOOTSTRAP
    env["PRESALE_REDIS_URL"] = REDIS_URL
    return env


async def delete_keys(client: aioredis.Redis, key_prefix: str) -> int:
    pattern = key_prefix.replace("{", "\\{").replace("}", "\\}") + "*"
    batch: list[bytes] = []
    deleted = 0
    async for key in client.scan_iter(match=pattern, count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            deleted += await client.unlink(*batch)
            batch = []
    if batch:
        deleted += await client.unlink(*batch)
    return deleted


def _timeout_s(records: int, slowest_rate: float) -> float:
    return 60.0 + records / slowest_rate


# --- a: the raw loop ---------------------------------------------------------


async def run_raw(procs: Processes, topic_prefix: str, total: int) -> RunResult:
    redis_pid, kafka_pid = service_pid("redis"), service_pid("kafka")
    redis0 = cpu_seconds(redis_pid) if redis_pid else None
    kafka0 = cpu_seconds(kafka_pid) if kafka_pid else None
    proc = procs.start(
        f"a-{time.time_ns()}",
        [PYTHON, "-m", "bench.raw_loop", topic_prefix],
        base_env(),
        capture=True,
    )
    started = time.perf_counter()
    try:
        out, _ = await asyncio.wait_for(
            asyncio.to_thread(proc.communicate), _timeout_s(total, 20_000)
        )
    except TimeoutError as exc:
        await procs.stop([proc], grace_s=0)
        raise RunFailed("the raw loop timed out") from exc
    finally:
        if proc in procs.live:
            procs.live.remove(proc)
    if proc.returncode != 0:
        msg = f"the raw loop exited with {proc.returncode}"
        raise RunFailed(msg)
    r = json.loads(out.decode().strip().splitlines()[-1])
    redis1 = cpu_seconds(redis_pid) if redis_pid else None
    kafka1 = cpu_seconds(kafka_pid) if kafka_pid else None
    wall = time.perf_counter() - started
    m = Measurement(
        records=r["records"] - r["first_n"],
        seconds=r["end_s"] - r["first_s"],
        cpu_s=r["end_cpu_s"] - r["first_cpu_s"],
        peak_rss_bytes=r["peak_rss_bytes"],
        # For a, the services' CPU covers the whole process life (a few
        # tenths of a second more than the timed part).
        redis_cpu_s=None if redis0 is None or redis1 is None else redis1 - redis0,
        kafka_cpu_s=None if kafka0 is None or kafka1 is None else kafka1 - kafka0,
        startup_s=wall - (r["end_s"] - r["first_s"]),
    )
    check = "ok" if r["records"] == total else f"read {r['records']:,} of {total:,}"
    return RunResult(m, check)


# --- b and c: the peers ------------------------------------------------------


async def _peer_progress(client: aioredis.Redis, keys: Keys) -> int:
    async with client.pipeline(transaction=False) as pipe:
        pipe.hmget(keys.totals, list(EVENT_COUNTERS))
        pipe.hmget(keys.outcomes, [DUPLICATE, DEAD_LETTER, OUT_OF_WINDOW])
        counts, outcomes = await pipe.execute()
    return sum(int(v or 0) for v in (*counts, *outcomes))


async def _peer_check(client: aioredis.Redis, keys: Keys, want: Totals) -> str:
    raw = await client.hgetall(keys.totals)
    got = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    outcomes = await client.hgetall(keys.outcomes)
    problems = [
        f"{name} {got.get(name, 0):,} != {value:,}"
        for name, value in want.counted.items()
        if got.get(name, 0) != value
    ]
    dead = int(outcomes.get(DEAD_LETTER.encode(), 0))
    if dead != want.dead_letters:
        problems.append(f"dead letters {dead:,} != {want.dead_letters:,}")
    return "ok" if not problems else "; ".join(problems)


async def run_peer(
    procs: Processes,
    client: aioredis.Redis,
    system: str,
    topic_prefix: str,
    want: Totals,
    run: str,
) -> RunResult:
    """b ("naive") or c ("quix") over the topics of `topic_prefix`."""
    if system == "naive":
        argv = [PYTHON, "-m", "bench.faust_naive", topic_prefix, run, str(free_port())]
        slowest = 500.0
    else:
        argv = [PYTHON, "-m", "bench.quix_peer", topic_prefix, run]
        slowest = 5_000.0
    keys = Keys(prefix(run))
    proc = procs.start(f"{system}-{run}", argv, base_env())
    try:
        m = await run_until_done(
            [proc],
            lambda: _peer_progress(client, keys),
            want.records,
            _timeout_s(want.records, slowest),
        )
        check = await _peer_check(client, keys, want)
    finally:
        await procs.stop([proc])
        await delete_keys(client, keys.p)
        if system == "naive":  # Faust's own leader topic of the app
            await delete_topics(f"bench-naive-{run}", "-")
    return RunResult(m, check)


# --- d: presale --------------------------------------------------------------


def presale_env(topic_prefix: str, campaign: str, **extra: str) -> dict[str, str]:
    env = base_env()
    env.update(
        PRESALE_CAMPAIGN_ID=campaign,
        PRESALE_TOPIC_PREFIX=topic_prefix,
        PRESALE_DATA_DIR=str(CACHE_DIR / "faust" / campaign),
    )
    env.update(extra)
    return env


def start_worker(
    procs: Processes, env: dict[str, str], name: str, metrics_port: int = 0
) -> subprocess.Popen[bytes]:
    worker_env = dict(env)
    worker_env["PRESALE_WEB_PORT"] = str(free_port())
    worker_env["PRESALE_METRICS_PORT"] = str(metrics_port or free_port())
    worker_env["PRESALE_DATA_DIR"] = env["PRESALE_DATA_DIR"] + "-" + name
    argv = [PYTHON, "-m", "streams.cli", "worker", "--loglevel", "warning"]
    return procs.start(name, argv, worker_env)


async def applied_records(client: aioredis.Redis, campaign: str) -> int:
    """Records whose effects are in Redis: the offsets hash of the campaign
    (docs/exactly-once.md), last applied offset + 1 per partition."""
    values = await client.hvals(f"presale:{{{campaign}}}:off")
    return sum(int(v) + 1 for v in values)


async def presale_report(env: dict[str, str]) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "streams.cli",
        "report",
        "--json",
        "--top",
        "1",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        msg = f"presale report failed: {err.decode().strip()[-300:]}"
        raise RunFailed(msg)
    report: dict[str, object] = orjson.loads(out)
    return report


async def presale_check(env: dict[str, str], want: Totals) -> str:
    report = await presale_report(env)
    totals = report["totals"]
    assert isinstance(totals, dict)
    problems = [
        f"{name} {totals.get(name, 0):,} != {value:,}"
        for name, value in want.counted.items()
        if totals.get(name, 0) != value
    ]
    if report["dead_letters"] != want.dead_letters:
        problems.append(f"dead letters {report['dead_letters']} != {want.dead_letters}")
    if report["consumer_lag"] != 0:
        problems.append(f"consumer_lag {report['consumer_lag']}")
    return "ok" if not problems else "; ".join(problems)


def _metric_sums(text: str) -> dict[str, float]:
    """`<name>_sum` and `<name>_count` samples of a Prometheus text page."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.endswith(("_sum", "_count")) and "{" not in name:
            sums[name] = float(value)
    return sums


async def worker_metrics(port: int) -> dict[str, float]:
    def get() -> str:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    try:
        return _metric_sums(await asyncio.to_thread(get))
    except OSError:
        return {}


async def lua_usec(client: aioredis.Redis) -> tuple[int, int]:
    """Redis's own count and microseconds of EVALSHA calls so far (all clients)."""
    stats = await client.info("commandstats")
    entry = stats.get("cmdstat_evalsha") or {}
    return int(entry.get("calls", 0)), int(entry.get("usec", 0))


def wall_time_split(
    m: Measurement,
    metrics: dict[str, float],
    lua: tuple[int, int],
) -> dict[str, float]:
    """Shares of d's timed wall clock: the worker's CPU, the Lua step inside
    Redis, and the Redis round trip as the worker waits for it; and sizes."""
    details = {
        "worker_cpu_share": m.cpu_s / m.seconds,
        "lua_share": lua[1] / 1e6 / m.seconds,
        "lua_us_per_event": lua[1] / m.records,
        "lua_calls": float(lua[0]),
    }
    roundtrip = metrics.get("presale_redis_roundtrip_seconds_sum")
    if roundtrip is not None:
        details["roundtrip_share"] = roundtrip / m.seconds
    batches = metrics.get("presale_batch_records_count")
    records = metrics.get("presale_batch_records_sum")
    if batches and records:
        details["records_per_batch"] = records / batches
    return details


class GroupReady:
    """True once the campaign's consumer group is Stable with `members` members."""

    def __init__(self, group: str, members: int) -> None:
        self.group = group
        self.members = members
        self.admin: AIOKafkaAdminClient | None = None

    async def __call__(self) -> bool:
        if self.admin is None:
            self.admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
            await self.admin.start()
        (response,) = await self.admin.describe_consumer_groups([self.group])
        for group in response.groups:
            _error, _gid, state, _ptype, _protocol, members = group[:6]
            if state == "Stable" and len(members) == self.members:
                return True
        return False

    async def close(self) -> None:
        if self.admin is not None:
            await self.admin.close()


async def run_presale(
    procs: Processes,
    client: aioredis.Redis,
    topic_prefix: str,
    want: Totals,
    run: str,
    workers: int = 1,
    profile_to: Path | None = None,
) -> RunResult:
    """`workers` presale worker processes over the topics; with more than one,
    the clock starts once their group is Stable with all of them in it."""
    campaign = f"bench-{run}"
    env = presale_env(topic_prefix, campaign)
    metrics_port = free_port()
    started = [
        start_worker(procs, env, f"d-{run}-{i}", metrics_port if i == 0 else 0)
        for i in range(workers)
    ]
    lua_before = await lua_usec(client)
    ready = GroupReady(f"presale-{campaign}", workers) if workers > 1 else None
    spy: list[subprocess.Popen[bytes]] = []

    def start_profiler() -> None:
        if profile_to is not None and not spy:
            spy.append(
                procs.start(
                    f"py-spy-{run}",
                    [
                        str(Path(PYTHON).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(started[0].pid),
                        "--rate",
                        "200",
                        "--nonblocking",
                        "--format",
                        "raw",
                        "--output",
                        str(profile_to),
                    ],
                    dict(os.environ),
                )
            )

    try:
        m = await run_until_done(
            started,
            lambda: applied_records(client, campaign),
            want.records,
            _timeout_s(want.records, 5_000),
            ready=ready,
            on_start=start_profiler,
        )
        lua_after = await lua_usec(client)
        metrics = await worker_metrics(metrics_port)
        for proc in spy:  # py-spy writes its file on SIGINT
            proc.send_signal(signal.SIGINT)
            await asyncio.to_thread(proc.wait, 30)
        check = await presale_check(env, want)
    finally:
        if ready is not None:
            await ready.close()
        await procs.stop([*spy, *started])
        await delete_keys(client, f"presale:{{{campaign}}}:")
    lua = (lua_after[0] - lua_before[0], lua_after[1] - lua_before[1])
    details = wall_time_split(m, metrics, lua) if workers == 1 else {}
    return RunResult(m, check, details)
