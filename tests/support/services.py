"""Run real `presale worker` processes against the local Kafka and Redis.

Each test gets its own topic prefix and campaign id, so tests never see each
other's records or Redis keys, and its own web and metrics ports.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.redis_servers import stop

ROOT = Path(__file__).resolve().parents[2]
STREAMS = ROOT / "seeds" / "streams"
KAFKA = os.environ.get("PRESALE_KAFKA_BOOTSTRAP", "localhost:9092")
REDIS = os.environ.get("PRESALE_REDIS_URL", "redis://localhost:6379/0")
_ports = itertools.count(21000 + (os.getpid() % 200) * 20)


def free_port() -> int:
    while True:
        port = next(_ports)
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port


def services_up() -> bool:
    """True when Kafka and Redis answer on their ports."""
    for url in (KAFKA, REDIS.removeprefix("redis://").split("/")[0]):
        host, _, port = url.split(",")[0].rpartition(":")
        try:
            with socket.create_connection((host or "localhost", int(port)), timeout=2):
                pass
        except OSError:
            return False
    return True


def one_line_error(done: subprocess.CompletedProcess[str], secret: str) -> str:
    """A command that failed as a CLI error must: non-zero, one line on stderr
    starting `presale: error: `, no traceback, and `secret` nowhere."""
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("presale: error: "), lines
    assert "Traceback" not in done.stderr
    assert secret not in done.stdout + done.stderr
    return lines[0]


def stop_processes(procs: list[subprocess.Popen[Any]], timeout: float = 30) -> None:
    """SIGTERM each process still running, then SIGKILL what has not exited."""
    stop(procs, timeout)


def recording_env(name: str) -> dict[str, str]:
    """The settings of committed recording `name`, as environment variables."""
    settings = json.loads((STREAMS / f"{name}.settings.json").read_text())
    for name in ("PRESALE_BASELINE_CSV", "PRESALE_CHANNEL_BASELINE_CSV"):
        if name in settings:
            settings[name] = str(STREAMS / settings[name])
    return settings


@dataclass
class Env:
    """One isolated campaign: its own topics, Redis prefix and ports."""

    extra: Mapping[str, str] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    def __post_init__(self) -> None:
        base = dict(self.extra)
        base.setdefault("PRESALE_CAMPAIGN_ID", "test")
        base["PRESALE_CAMPAIGN_ID"] = f"{base['PRESALE_CAMPAIGN_ID']}-{self.tag}"
        base["PRESALE_TOPIC_PREFIX"] = f"t{self.tag}"
        base.setdefault("PRESALE_KAFKA_BOOTSTRAP", KAFKA)
        base.setdefault("PRESALE_REDIS_URL", REDIS)
        base.setdefault("PRESALE_DATA_DIR", str(ROOT / "var" / "test-faust" / self.tag))
        self.vars = base

    def environ(self, **more: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRESALE_")}
        env.update(self.vars)
        env.update(more)
        return env

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run one `presale` command to its end, output captured."""
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", *args],
            env=self.environ(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def presale(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        """Run one `presale` command; returns its stdout."""
        done = self.run(*args, timeout=timeout)
        if check and done.returncode != 0:
            command = " ".join(args)
            msg = f"presale {command} exited {done.returncode}: {done.stderr[-2000:]}"
            raise AssertionError(msg)
        return done.stdout

    def background(self, *args: str) -> subprocess.Popen[str]:
        """Start one `presale` command without waiting for it."""
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *args],
            env=self.environ(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def topic(self, short: str) -> str:
        return f"{self.vars['PRESALE_TOPIC_PREFIX']}.{short}"

    def report(self) -> dict[str, Any]:
        return json.loads(self.presale("report", "--json"))

    def replay(self, *files: str | Path) -> None:
        self.presale("replay", "--quiet", *map(str, files))

    def wait_applied(
        self,
        timeout: float = 180,
        expect_min: int = 1,
        alive: list[Worker] | None = None,
    ) -> dict[str, Any]:
        """Poll the report until consumer_lag is 0; returns it. Fails at once
        when one of the `alive` workers has died."""
        deadline = time.monotonic() + timeout
        report: dict[str, Any] = {}
        while time.monotonic() < deadline:
            for w in alive or ():
                w.check_alive()
            report = self.report()
            if report["consumer_lag"] == 0 and self._published() >= expect_min:
                return report
            time.sleep(0.5)
        msg = f"consumer_lag still {report.get('consumer_lag')} after {timeout} s"
        raise AssertionError(msg)

    def _published(self) -> int:
        async def ends() -> int:
            from streams.kafka import log_end_offsets
            from streams.settings import Settings

            settings = Settings.from_env(self.vars, load=False)
            return sum(
                (
                    await log_end_offsets(settings, ("clicks", "carts", "orders"))
                ).values()
            )

        return asyncio.run(ends())


class Worker:
    """One `presale worker` subprocess."""

    def __init__(self, env: Env, name: str = "w", loglevel: str = "warning") -> None:
        self.env = env
        self.loglevel = loglevel
        self.web_port = free_port()
        self.metrics_port = free_port()
        log_dir = ROOT / "var" / "test-logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{env.tag}-{name}-{self.web_port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Worker:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.cli",
                "worker",
                "--loglevel",
                self.loglevel,
            ],
            env=self.env.environ(
                PRESALE_WEB_PORT=str(self.web_port),
                PRESALE_METRICS_PORT=str(self.metrics_port),
            ),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def get(self, path: str, port: int | None = None) -> bytes:
        url = f"http://127.0.0.1:{port or self.web_port}{path}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body: bytes = resp.read()
            return body

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                msg = f"worker exited {self.proc.returncode}: {self.tail()}"
                raise AssertionError(msg)
            try:
                self.get("/health")
                return
            except OSError:
                time.sleep(0.3)
        msg = f"worker not ready after {timeout} s: {self.tail()}"
        raise AssertionError(msg)

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            msg = f"worker exited {self.proc.returncode}: {self.tail()}"
            raise AssertionError(msg)
        if "Crashed reason=" in self.tail(20000):
            msg = f"worker crashed: {self.tail()}"
            raise AssertionError(msg)

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as in a crash."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def workers(env: Env, n: int = 1) -> Iterator[list[Worker]]:
    started = [Worker(env, f"w{i}").start() for i in range(n)]
    try:
        yield started
    finally:
        for w in started:
            w.stop()
