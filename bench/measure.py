"""Time one system from its first applied record to its last, with its costs.

A system runs as its own process(es). The harness polls its progress (records
whose effects are in Redis) every 10 ms. The clock starts at the first poll
that sees progress (the records already done then are left out of the count)
and stops when progress reaches the records in the topics. CPU seconds are
read from /proc for the same interval, for the system's processes and for the
local Redis and Kafka; peak RSS is the process's VmHWM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from bench.procstat import cpu_seconds, peak_rss_bytes, service_pid

POLL_S = 0.01


class RunFailed(Exception):
    """A measured run did not finish (a process died, or it timed out)."""


class ServicesRestarted(RunFailed):
    """Kafka or Redis restarted during the run (another session's fault test?)."""


@dataclass(frozen=True, slots=True)
class Measurement:
    records: int  # records timed: those applied after the clock started
    seconds: float
    cpu_s: float  # the system's processes, user + system
    peak_rss_bytes: int  # the largest VmHWM among its processes
    redis_cpu_s: float | None
    kafka_cpu_s: float | None
    startup_s: float  # process start to the first progress seen

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    def per_million(self, cpu_s: float | None) -> float | None:
        return None if cpu_s is None else cpu_s * 1e6 / self.records


@dataclass(frozen=True, slots=True)
class Sample:
    at_s: float
    done: int
    cpu_s: float
    redis_cpu_s: float | None
    kafka_cpu_s: float | None

    @classmethod
    def take(cls, done: int, pids: Sequence[int]) -> Sample:
        now = time.perf_counter()
        cpu = sum(cpu_seconds(pid) or 0.0 for pid in pids)
        return cls(now, done, cpu, _service_cpu("redis"), _service_cpu("kafka"))


def _service_cpu(name: str) -> float | None:
    pid = service_pid(name)
    return None if pid is None else cpu_seconds(pid)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def between(first: Sample, last: Sample, peak_rss: int, start_s: float) -> Measurement:
    return Measurement(
        records=last.done - first.done,
        seconds=last.at_s - first.at_s,
        cpu_s=last.cpu_s - first.cpu_s,
        peak_rss_bytes=peak_rss,
        redis_cpu_s=_diff(first.redis_cpu_s, last.redis_cpu_s),
        kafka_cpu_s=_diff(first.kafka_cpu_s, last.kafka_cpu_s),
        startup_s=first.at_s - start_s,
    )


class Services:
    """Identity of the running Kafka and Redis, to notice a restart mid-run."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def identity(self) -> tuple[str, int | None]:
        info = await self.client.info("server")
        return str(info.get("run_id")), service_pid("kafka")


class Processes:
    """Child processes of the harness: logged to files, always stopped."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.live: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str], capture: bool = False
    ) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE if capture else log,
            stderr=log,
            start_new_session=True,  # a Ctrl-C of the harness is ours to pass on
        )
        log.close()
        self.live.append(proc)
        return proc

    async def stop(
        self, procs: Sequence[subprocess.Popen[bytes]], grace_s: float = 10.0
    ) -> None:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in procs:
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc in self.live:
                self.live.remove(proc)

    def kill_all(self) -> None:
        for proc in self.live:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        self.live.clear()


async def run_until_done(
    procs: Sequence[subprocess.Popen[bytes]],
    progress: Callable[[], Awaitable[int]],
    total: int,
    timeout_s: float,
    ready: Callable[[], Awaitable[bool]] | None = None,
    on_start: Callable[[], None] | None = None,
) -> Measurement:
    """Poll until `progress()` reaches `total`; the clock starts at the first
    progress seen once `ready()` (if given) is true, and calls `on_start()`."""
    start_s = time.perf_counter()
    pids = [p.pid for p in procs]
    first: Sample | None = None
    next_ready_check = 0.0
    while True:
        for proc in procs:
            if proc.poll() is not None:
                msg = f"process {proc.args!r} exited with {proc.returncode}"
                raise RunFailed(msg)
        done = await progress()
        now = time.perf_counter()
        if first is None and done > 0:
            if ready is None:
                first = Sample.take(done, pids)
            elif now >= next_ready_check:
                next_ready_check = now + 0.1
                if await ready():
                    first = Sample.take(await progress(), pids)
            if first is not None and on_start is not None:
                on_start()
        if first is not None and done >= total:
            last = Sample.take(done, pids)
            peak = max(peak_rss_bytes(pid) or 0 for pid in pids)
            return between(first, last, peak, start_s)
        if now - start_s > timeout_s:
            msg = f"{done:,} of {total:,} records after {timeout_s:.0f} s"
            raise RunFailed(msg)
        await asyncio.sleep(POLL_S)
