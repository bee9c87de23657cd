"""`make bench-scale`: how one campaign's Redis work spreads over a Redis Cluster.

For each cluster size (1, 3 and 6 masters, no replicas, slots split evenly by
`redis-cli --cluster create`; servers of our own on free ports, stopped after)
the same workload (copies of the first-hour recording, bench/workload.py,
loaded once into fresh topics of 6 partitions) is counted by 2 `presale
worker` processes, each run under a campaign of its own, with
PRESALE_REDIS_CLUSTER=1 and PRESALE_STATE_SHARDS (12 by default: a setting
a worker without state shards ignores). A run ends when the applied offsets
reach the topics' end offsets (the report's consumer_lag is 0); its report is
then checked against the reference's counts.

Per master it reads `INFO CPU` (used_cpu_sys + used_cpu_user) before and after
the run, less what the idle cluster spends by itself (measured for 3 s before
it), and divides by the records published: Redis CPU µs per event. The hottest
master bounds the cluster: its µs/event gives the projected ceiling, 1 / that
in events/s. The machine has 2 cores, shared by the workers, Kafka and every
master, so wall-clock throughput says nothing about the cluster's ceiling: it
is projected from Redis CPU per master.

Which script spent it: a second pass on the same cluster (flushed), with
`slowlog-log-slower-than 0` on every master, logs every command with its
duration; EVALSHA calls are attributed by their sha to the apply step
(APPLY_LUA), the campaign-wide fold (FOLD_LUA, once streams/store.py has it),
the outbox lease and the alert raise; commands a script runs itself (client
`?:0`) are inside their EVALSHA's duration and not counted again. Logging every
command costs Redis CPU (20-60% more here), which is why the CPU figures come
from the first pass, with the slowlog off; the table shows what the second
pass's slowlog added. `--no-slowlog` skips the second pass.

It prints a table, the issue's targets, and writes var/bench/scale-<run>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bench.kafka_io import BOOTSTRAP, create_topics, delete_topics, load
from bench.measure import Processes, RunFailed
from bench.procstat import machine
from bench.redis_servers import ServerFailed, redis_cluster, redis_server
from bench.run import git_state
from bench.systems import GroupReady, presale_check, presale_env, start_worker
from bench.workload import CACHE_DIR, PARTITIONS, Totals, Workload

TRACE = CACHE_DIR / "scale-error.txt"  # the last unexpected error's traceback
SIZES = (1, 3, 6)
WORKERS = 2
IDLE_S = 3.0
POLL_S = 0.1
DRAIN_S = 0.5
SCRIPT_CLIENT = b"?:0"  # the client a Lua script's own redis.call runs as

# The targets.
TARGET_SHARE = {3: 0.40, 6: 0.22}  # hottest master's share of all Redis CPU
TARGET_FOLD_US = 0.1  # campaign-wide slot, µs an event
TARGET_SUM_US = 4.0  # all masters together, µs an event
TARGET_CEILING = 1_000_000  # with 6 masters, events/s


def scripts() -> dict[str, str]:
    """sha1 -> what the script is, for the scripts the worker runs."""
    from streams import alerts, outbox, store

    known = {
        "apply": store.APPLY_LUA,
        "fold": getattr(store, "FOLD_LUA", None),
        "lease": outbox.LEASE_LUA,
        "raise": alerts.RAISE_LUA,
    }
    return {
        hashlib.sha1(text.encode()).hexdigest(): name
        for name, text in known.items()
        if text is not None
    }


def has_fold() -> bool:
    from streams import store

    return hasattr(store, "FOLD_LUA")


@dataclass
class Master:
    port: int
    cpu_us: float = 0.0  # INFO CPU over the run, less the idle rate
    raw_cpu_us: float = 0.0  # INFO CPU over the run
    idle_us_per_s: float = 0.0
    keys: int = 0
    slowlog_us: dict[str, int] = field(default_factory=dict)  # what -> µs
    slowlog_calls: dict[str, int] = field(default_factory=dict)
    slowlog_max_us: int = 0  # the longest command
    script_commands: int = 0  # logged commands run by a script (not counted)
    slowlog_lost: int = 0  # entries the log dropped before they were read
    # INFO commandstats over the run: command -> µs inside Redis (a script's
    # own commands counted apart and inside their EVALSHA's µs as well)
    command_us: dict[str, int] = field(default_factory=dict)


@dataclass
class SizeResult:
    masters: int
    campaign: str
    records: int
    timed_records: int  # applied after both workers were in the group
    seconds: float  # from then to the last record, wall clock
    check: str
    nodes: list[Master]
    slowlog: bool  # this pass ran with the slowlog on
    stalls: list[str] = field(default_factory=list)  # progress polls that failed
    # The second pass, with the slowlog on: the per-script split comes from it.
    logged: SizeResult | None = None

    @property
    def rate(self) -> float:
        return self.timed_records / self.seconds if self.seconds else 0.0

    @property
    def total_cpu_us(self) -> float:
        return sum(m.cpu_us for m in self.nodes)

    def per_event(self) -> list[float]:
        return [m.cpu_us / self.records for m in self.nodes]

    @property
    def hottest_us(self) -> float:
        return max(self.per_event())

    @property
    def hottest_share(self) -> float:
        total = self.total_cpu_us
        return max(m.cpu_us for m in self.nodes) / total if total else 0.0

    @property
    def sum_us(self) -> float:
        return self.total_cpu_us / self.records

    @property
    def ceiling(self) -> float:
        return 1e6 / self.hottest_us if self.hottest_us > 0 else float("inf")

    def script_us(self, what: str) -> float | None:
        if self.logged is not None:
            return self.logged.script_us(what)
        if not self.slowlog:
            return None
        return sum(m.slowlog_us.get(what, 0) for m in self.nodes) / self.records

    @property
    def slowlog_cost_us(self) -> float | None:
        """What logging every command added to the masters' CPU, µs an event."""
        return None if self.logged is None else self.logged.sum_us - self.sum_us

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["logged"] = self.logged.as_json() if self.logged else None
        out.update(
            rate_wall=self.rate,
            us_per_event=self.per_event(),
            hottest_us_per_event=self.hottest_us,
            hottest_share=self.hottest_share,
            sum_us_per_event=self.sum_us,
            projected_ceiling_events_s=self.ceiling,
            slowlog_cost_us_per_event=self.slowlog_cost_us,
            script_us_per_event={
                w: self.script_us(w)
                for w in ("apply", "fold", "lease", "raise", "eval", "other")
            },
        )
        return out


async def cpu_us(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return (float(info["used_cpu_sys"]) + float(info["used_cpu_user"])) * 1e6


async def command_us(client: aioredis.Redis) -> dict[str, int]:
    """Each command's µs inside Redis since the last CONFIG RESETSTAT."""
    info = await client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(stats["usec"])
        for name, stats in info.items()
        if isinstance(stats, dict) and "usec" in stats
    }


def top_commands(nodes: list[Master], records: int, n: int = 8) -> str:
    """The commands that took the most of the masters' time, µs an event."""
    total: dict[str, int] = {}
    for node in nodes:
        for name, us in node.command_us.items():
            total[name] = total.get(name, 0) + us
    best = sorted(total.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{name} {us / records:.2f}" for name, us in best)


class SlowlogReader:
    """A master's slowlog, read as it fills (every DRAIN_S: the entries logged
    since the last read, by id), so that no reply is ever larger than a few
    seconds' commands and slowlog-max-len stays small. Durations are summed by
    script (see the module's docstring); entries the log dropped before they
    were read are counted in `Master.slowlog_lost`."""

    def __init__(
        self,
        client: aioredis.Redis,
        node: Master,
        shas: dict[str, str],
        max_len: int,
    ) -> None:
        self.client = client
        self.max_len = max_len
        self.node = node
        self.shas = shas
        self.last_id = -1

    async def start(self) -> None:
        await self.client.slowlog_reset()
        newest = await self.client.slowlog_get(1)
        self.last_id = int(newest[0]["id"]) if newest else -1

    async def drain(self) -> None:
        newest = await self.client.slowlog_get(1)
        if not newest or int(newest[0]["id"]) <= self.last_id:
            return
        want = int(newest[0]["id"]) - self.last_id + 1000
        while True:  # a step's own commands may have been logged since: more
            got = await self.client.slowlog_get(want)
            entries = [e for e in got if int(e["id"]) > self.last_id]
            if len(entries) < len(got) or len(got) < want or want >= self.max_len:
                break
            want = min(want * 2, self.max_len)
        if not entries:
            return
        oldest = min(int(e["id"]) for e in entries)
        self.node.slowlog_lost += max(0, oldest - self.last_id - 1)
        self.last_id = max(int(e["id"]) for e in entries)
        for entry in entries:
            self.add(entry)

    def add(self, entry: dict[str, Any]) -> None:
        node = self.node
        if entry.get("client_address") == SCRIPT_CLIENT:
            node.script_commands += 1
            return
        parts = bytes(entry["command"]).split(b" ", 2)
        name = parts[0].upper()
        if name == b"EVALSHA" and len(parts) > 1:
            what = self.shas.get(parts[1].decode(errors="replace").lower(), "eval")
        elif name in (b"EVAL", b"EVAL_RO", b"EVALSHA_RO", b"SCRIPT"):
            what = "eval"
        else:
            what = "other"
        duration = int(entry["duration"])
        node.slowlog_us[what] = node.slowlog_us.get(what, 0) + duration
        node.slowlog_calls[what] = node.slowlog_calls.get(what, 0) + 1
        node.slowlog_max_us = max(node.slowlog_max_us, duration)

    async def follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), DRAIN_S)
        await self.drain()


class Progress:
    """Records applied, as `presale report` counts them: the store's applied
    offsets against the topics' end offsets (the same store code, so it follows
    the state layer wherever it keeps its offsets)."""

    def __init__(self, env: dict[str, str]) -> None:
        from streams.settings import Settings
        from streams.store import RedisStore

        self.settings = Settings.from_env(env)
        self.store = RedisStore.from_settings(self.settings)
        self.ends: dict[str, int] = {}

    async def published(self) -> int:
        from streams.kafka import log_end_offsets

        self.ends = await log_end_offsets(self.settings, ("clicks", "carts", "orders"))
        return sum(self.ends.values())

    async def applied(self) -> int:
        from streams.kafka import lag

        done = await self.store.applied_offsets(self.ends)
        return sum(self.ends.values()) - lag(self.ends, done)

    async def close(self) -> None:
        await self.store.close()


async def run_size(
    args: argparse.Namespace,
    procs: Processes,
    ports: list[int],
    topic_prefix: str,
    want: Totals,
    campaign: str,
    cluster: bool = True,
    slowlog: bool = False,
) -> SizeResult:
    size = len(ports) if cluster else 0
    nodes = [Master(p) for p in ports]
    clients = [
        aioredis.Redis(host="127.0.0.1", port=p, socket_timeout=120) for p in ports
    ]
    shas = scripts()
    env = presale_env(
        topic_prefix,
        campaign,
        PRESALE_REDIS_URL=f"redis://127.0.0.1:{ports[0]}",
        PRESALE_REDIS_CLUSTER="1" if cluster else "0",
        PRESALE_STATE_SHARDS=str(args.shards),
    )
    progress = Progress(env)
    ready = GroupReady(f"presale-{campaign}", args.workers)
    started = []
    seconds, timed = 0.0, 0
    stalls: list[str] = []
    stop = asyncio.Event()
    following: list[asyncio.Task[None]] = []
    try:
        if await progress.published() != want.records:
            msg = f"the topics {topic_prefix}.* do not hold {want.records:,} records"
            raise RunFailed(msg)
        for c in clients:
            await c.flushall()  # the cluster is ours: the pass before goes
            if slowlog:
                await c.config_set("slowlog-log-slower-than", 0)
                await c.config_set("slowlog-max-len", slowlog_len(args, want))
            else:
                await c.config_set("slowlog-log-slower-than", -1)  # off
            await c.slowlog_reset()
            await c.config_resetstat()
        idle0 = [await cpu_us(c) for c in clients]
        await asyncio.sleep(IDLE_S)
        idle1 = [await cpu_us(c) for c in clients]
        readers = [
            SlowlogReader(c, n, shas, args.slowlog_len)
            for c, n in zip(clients, nodes, strict=True)
        ]
        for reader in readers:
            await reader.start()
        if slowlog:
            following = [asyncio.create_task(r.follow(stop)) for r in readers]
        before = [await cpu_us(c) for c in clients]
        t_before = time.perf_counter()
        started = [
            start_worker(procs, env, f"m{size}{'s' if slowlog else ''}-w{i}")
            for i in range(args.workers)
        ]
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + 120 + want.records / 5_000
        while True:
            for proc in started:
                if proc.poll() is not None:
                    msg = (
                        f"a worker exited with {proc.returncode} (its log: "
                        f"{procs.log_dir.relative_to(CACHE_DIR.parent.parent)})"
                    )
                    raise RunFailed(msg)
            try:
                done = await progress.applied()
            except RedisError as exc:  # a stalled master: noted, polled again
                stalls.append(f"{type(exc).__name__}: {exc}")
                print(f"  progress poll failed ({stalls[-1]}); again", flush=True)
                continue
            now = time.perf_counter()
            if first is None and done > 0 and await ready():
                first = (now, await progress.applied())
            if done >= want.records:
                break
            if time.monotonic() > deadline:
                msg = f"{done:,} of {want.records:,} records applied in time"
                raise RunFailed(msg)
            await asyncio.sleep(POLL_S)
        after = [await cpu_us(c) for c in clients]
        t_after = time.perf_counter()
        stop.set()
        if slowlog:
            await asyncio.gather(*following)
        for node, c, i0, i1, b, a in zip(
            nodes, clients, idle0, idle1, before, after, strict=True
        ):
            node.idle_us_per_s = (i1 - i0) / IDLE_S
            node.raw_cpu_us = a - b
            node.cpu_us = max(0.0, a - b - node.idle_us_per_s * (t_after - t_before))
            node.keys = int(await c.dbsize())
            node.command_us = await command_us(c)
        if first is not None:
            seconds = t_after - first[0]
            timed = want.records - first[1]
        check = await presale_check(env, want)
    finally:
        for task in following:  # after an error: the reads stop with it
            task.cancel()
        await procs.stop(started)
        await ready.close()
        await progress.close()
        for c in clients:
            await c.aclose()
        for i in range(args.workers):
            shutil.rmtree(
                CACHE_DIR
                / "faust"
                / f"{campaign}-m{size}{'s' if slowlog else ''}-w{i}",
                ignore_errors=True,
            )
    return SizeResult(
        size,
        campaign,
        want.records,
        timed,
        seconds,
        check,
        nodes,
        slowlog,
        stalls,
    )


def slowlog_len(args: argparse.Namespace, want: Totals) -> int:
    """Room for what is logged between two reads (DRAIN_S): a script's own
    commands are logged too, about one for every two events."""
    return int(args.slowlog_len)


def print_pass(r: SizeResult) -> None:
    print(
        f"  {r.records:,} records, the last {r.timed_records:,} in "
        f"{r.seconds:.1f} s ({r.rate:,.0f}/s wall); Redis CPU "
        f"{' / '.join(f'{v:.2f}' for v in r.per_event())} µs/event "
        f"per master (idle "
        f"{' / '.join(f'{n.idle_us_per_s / 1e3:.1f}' for n in r.nodes)} "
        f"ms/s); keys {' / '.join(f'{n.keys:,}' for n in r.nodes)}; "
        f"check: {r.check}",
        flush=True,
    )
    if any(n.command_us for n in r.nodes):
        print(
            "  µs/event by command (INFO commandstats, all masters; a script's "
            f"commands inside its evalsha too): {top_commands(r.nodes, r.records)}",
            flush=True,
        )
    if r.slowlog:
        longest = max(n.slowlog_max_us for n in r.nodes) / 1e6
        lost = sum(n.slowlog_lost for n in r.nodes)
        print(
            f"  the longest command took {longest:.2f} s; slowlog entries lost "
            f"before they were read: {lost:,}",
            flush=True,
        )
    if r.stalls:
        print(f"  {len(r.stalls)} progress polls failed: {r.stalls[0]}")


def where(masters: int) -> str:
    return f"{masters} masters" if masters else "no cluster"


def fmt_us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def print_results(results: list[SizeResult], shards: int, fold: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=180)
    table = Table(
        title=(
            f"Redis CPU per event over a Redis Cluster "
            f"(PRESALE_STATE_SHARDS={shards}, {WORKERS} workers)"
        ),
        title_justify="left",
    )
    for name in (
        "masters",
        "events",
        "wall ev/s",
        "each master",
        "hottest",
        "its share",
        "sum",
        "ceiling ev/s",
        "fold",
        "apply",
        "other",
        "log cost",
        "check",
    ):
        table.add_column(
            name,
            justify="left" if name in ("check", "each master") else "right",
            no_wrap=name != "check",
        )
    for r in results:
        other = [r.script_us(w) for w in ("lease", "raise", "eval", "other")]
        table.add_row(
            str(r.masters) if r.masters else "no cluster",
            f"{r.records:,}",
            f"{r.rate:,.0f}",
            " / ".join(f"{v:.2f}" for v in r.per_event()),
            f"{r.hottest_us:.2f}",
            f"{r.hottest_share:.0%}",
            f"{r.sum_us:.2f}",
            f"{r.ceiling:,.0f}",
            fmt_us(r.script_us("fold")) if fold else "n/a",
            fmt_us(r.script_us("apply")),
            "n/a" if None in other else fmt_us(sum(v or 0.0 for v in other)),
            fmt_us(r.slowlog_cost_us),
            r.check if r.logged is None else f"{r.check}, {r.logged.check}",
        )
    console.print(table)
    console.print(
        "Redis CPU µs per event (records published) from INFO CPU: on each "
        "master, on the hottest, its share of them all, their sum, measured "
        "with the slowlog off. fold, apply, other: µs per event from the SLOWLOG "
        "of a second pass"
        + ("" if fold else " (fold: n/a, no fold step yet)")
        + "; log cost: what that pass's slowlog added to the sum. wall ev/s: "
        "from both workers in the group to the last record."
    )
    console.print(
        "This machine has 2 cores, shared by the workers, Kafka and every master: "
        "the ceiling is projected from each master's Redis CPU per event (INFO "
        "CPU, less the idle cluster's own), 1 / the hottest master's µs per "
        "event, not from the wall-clock events/s."
    )
    if any(r.logged for r in results):
        console.print(
            "fold / apply / other: SLOWLOG durations of each script's EVALSHA "
            "calls (other: the outbox lease, alert raises, every other command). "
            "A duration is wall time inside Redis: on 2 shared cores it counts "
            "time the master was not on CPU too, so these can exceed INFO CPU. "
            "The slowlog logs every command (a script's own too): that costs "
            "Redis CPU, hence its own pass (`--no-slowlog` skips it)."
        )
    lost = [
        (r.masters, n.port, n.slowlog_lost)
        for r in results
        if r.logged
        for n in r.logged.nodes
        if n.slowlog_lost
    ]
    if lost:
        console.print(
            f"[bold]the slowlog dropped entries before they were read[/] "
            f"(masters, port, entries): {lost}: its figures are short; raise "
            "--slowlog-len"
        )

    targets = Table(title="The issue's targets", title_justify="left")
    for name in ("target", "figure", ""):
        targets.add_column(name, justify="left" if name != "figure" else "right")
    by_size = {r.masters: r for r in results}
    for size, goal in TARGET_SHARE.items():
        if size in by_size:
            share = by_size[size].hottest_share
            targets.add_row(
                f"{size} masters: hottest share <= {goal:.0%}",
                f"{share:.0%}",
                verdict(share <= goal),
            )
    for r in results:
        fold_us = r.script_us("fold") if fold else None
        targets.add_row(
            f"{where(r.masters)}: campaign-wide slot <= {TARGET_FOLD_US} µs/event",
            "n/a (no fold step)" if not fold else fmt_us(fold_us),
            "-" if fold_us is None else verdict(fold_us <= TARGET_FOLD_US),
        )
    for r in results:
        targets.add_row(
            f"{where(r.masters)}: sum over masters <= {TARGET_SUM_US} µs/event",
            f"{r.sum_us:.2f}",
            verdict(r.sum_us <= TARGET_SUM_US),
        )
    if 6 in by_size:
        ceiling = by_size[6].ceiling
        targets.add_row(
            f"6 masters: projected ceiling >= {TARGET_CEILING:,} events/s",
            f"{ceiling:,.0f}",
            verdict(ceiling >= TARGET_CEILING),
        )
    console.print(targets)


async def run_scale(args: argparse.Namespace) -> int:
    stamp = time.strftime("%m%d%H%M") + secrets.token_hex(2)
    info = machine()
    print(
        f"presale bench-scale {stamp}: {info['cpus']} CPUs ({info['cpu_model']}), "
        f"load {os.getloadavg()[0]:.2f}; Kafka {BOOTSTRAP}; code {git_state()}"
    )
    fold = has_fold()
    workload = Workload.load()
    copies = workload.copies_for(args.records)
    want = workload.totals(copies)
    print(
        f"workload: {copies} copies of the first-hour recording = "
        f"{want.records:,} records over {PARTITIONS} partitions a topic; "
        f"{args.workers} workers, PRESALE_STATE_SHARDS={args.shards}; "
        f"fold step: {'FOLD_LUA' if fold else 'none yet'}",
        flush=True,
    )
    topic_prefix = f"scale-{stamp}"
    procs = Processes(CACHE_DIR / "logs" / f"scale-{stamp}")
    results: list[SizeResult] = []
    try:
        await create_topics(topic_prefix)

        def records() -> Iterator[tuple[int, int, bytes | None, bytes]]:
            return workload.records(copies)

        loaded = await load(topic_prefix, records())
        print(
            f"loaded {loaded.records:,} records into {topic_prefix}.* in "
            f"{loaded.seconds:.1f} s",
            flush=True,
        )
        for size in args.sizes:
            with ExitStack() as stack:
                if size:
                    ports = stack.enter_context(redis_cluster(size))
                    what = f"{size} master(s) on ports {', '.join(map(str, ports))}"
                else:  # the reference: one Redis, no cluster
                    ports = [stack.enter_context(redis_server())]
                    what = f"one Redis, no cluster (size 0), on port {ports[0]}"
                print(f"\n{what}: counting...", flush=True)
                r = await run_size(
                    args,
                    procs,
                    ports,
                    topic_prefix,
                    want,
                    f"scale-{stamp}-m{size}",
                    cluster=size > 0,
                )
                print_pass(r)
                if not args.no_slowlog:
                    print("  again with the slowlog on (the per-script split)...")
                    r.logged = await run_size(
                        args,
                        procs,
                        ports,
                        topic_prefix,
                        want,
                        f"scale-{stamp}-m{size}s",
                        cluster=size > 0,
                        slowlog=True,
                    )
                    print_pass(r.logged)
            results.append(r)
    finally:
        procs.kill_all()
        await delete_topics(topic_prefix)
        if results and len(results) < len(args.sizes):  # the sizes done, at least
            write_results(stamp, info, want, args, fold, results)
    write_results(stamp, info, want, args, fold, results)
    return 0 if all(r.check == "ok" for r in results) else 1


def write_results(
    stamp: str,
    info: dict[str, Any],
    want: Totals,
    args: argparse.Namespace,
    fold: bool,
    results: list[SizeResult],
) -> None:
    print()
    print_results(results, args.shards, fold)
    out = {
        "stamp": stamp,
        "machine": info,
        "presale_commit": git_state(),
        "workload_records": want.records,
        "workers": args.workers,
        "partitions": PARTITIONS,
        "state_shards": args.shards,
        "fold_step": fold,
        "slowlog": not args.no_slowlog,
        "targets": {
            "hottest_share": {str(k): v for k, v in TARGET_SHARE.items()},
            "fold_us_per_event": TARGET_FOLD_US,
            "sum_us_per_event": TARGET_SUM_US,
            "ceiling_6_masters": TARGET_CEILING,
        },
        "sizes": [r.as_json() for r in results],
    }
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    (CACHE_DIR / f"scale-{stamp}.json").write_text(json.dumps(out, indent=2))
    print(f"\nresults: var/bench/scale-{stamp}.json", flush=True)


def sizes(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v < 0 or v > 16 for v in values):
        msg = (
            f"{text!r}: a comma list of master counts from 1 to 16, e.g. 1,3,6 "
            "(0: one Redis, no cluster, for reference)"
        )
        raise argparse.ArgumentTypeError(msg)
    return values


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"{text!r} is not a positive whole number"
        raise argparse.ArgumentTypeError(msg)
    return value


class Parser(argparse.ArgumentParser):
    """Usage errors as one line, as every other error here."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"bench-scale: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    p = Parser(
        prog="python -m bench.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--sizes",
        type=sizes,
        default=SIZES,
        help="masters per cluster (1,3,6; 0 adds one Redis, no cluster)",
    )
    p.add_argument(
        "--records", type=positive, default=2_000_000, help="workload size, at least"
    )
    p.add_argument(
        "--shards",
        type=positive,
        default=12,
        help="PRESALE_STATE_SHARDS for the workers (12)",
    )
    p.add_argument("--workers", type=positive, default=WORKERS, help="workers (2)")
    p.add_argument(
        "--slowlog-len",
        type=positive,
        default=1_000_000,
        help="slowlog-max-len on each master (1,000,000; it is read every 0.5 s)",
    )
    p.add_argument(
        "--no-slowlog",
        action="store_true",
        help="skip the second pass, with the slowlog on (the per-script split)",
    )
    args = p.parse_args(argv)
    # The Kafka clients' own log lines would come before the one-line error.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(run_scale(args))
    except KeyboardInterrupt:
        print("bench-scale: interrupted", file=sys.stderr)
        return 130
    except (RunFailed, ServerFailed, OSError) as exc:
        print(f"bench-scale: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a Kafka or Redis client error: one line, no trace
        TRACE.parent.mkdir(parents=True, exist_ok=True)
        TRACE.write_text(traceback.format_exc())
        text = str(exc)
        if not text.startswith(type(exc).__name__):
            text = f"{type(exc).__name__}: {text}"
        print(
            f"bench-scale: error: {text} (the traceback: "
            f"{TRACE.relative_to(CACHE_DIR.parent.parent)})",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
