"""Throwaway real Redis servers on free ports, from Debian's `redis-server`: one
server, or a Redis Cluster of N masters (no replicas) made by `redis-cli
--cluster create` (slots split evenly). Each lives in a temp dir and is stopped
when its context ends, after an error or a Ctrl-C too. The tests
(tests/support/redis_servers.py) and `make bench-scale` (bench/scale.py) start
theirs here; the shared Redis on 6379 is never touched."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

READY_S = 60.0
# Candidate ports: below 55535 so that the cluster bus port (port + 10000) is a
# port too, away from the ephemeral range and from the tests' own counter.
_ports = itertools.count(40000 + (os.getpid() % 500) * 20)


class ServerFailed(RuntimeError):
    """A redis-server did not start, or the cluster was not formed."""


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def free_port(bus: bool = False) -> int:
    """A port nothing listens on (and, with `bus`, its port + 10000 neither)."""
    for port in _ports:
        if port >= 55_535:
            break
        if _port_free(port) and (not bus or _port_free(port + 10_000)):
            return port
    raise ServerFailed("no free port left for a redis-server")


def cli(port: int, *args: str, auth: tuple[str, str] | None = None) -> str:
    """`redis-cli` against 127.0.0.1:`port`; its stdout and stderr."""
    command = ["redis-cli", "-h", "127.0.0.1", "-p", str(port)]
    if auth:
        command += ["--user", auth[0], "--pass", auth[1], "--no-auth-warning"]
    done = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=30, check=False
    )
    return done.stdout + done.stderr


def _says(port: int, text: str, *command: str) -> bool:
    return text in cli(port, *command)


def wait_for(
    what: str, ok: Callable[[], bool], procs: list[subprocess.Popen[bytes]]
) -> None:
    """Until `ok()`; fails when a server exits first or after READY_S."""
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                msg = f"redis-server exited {p.returncode} before {what}"
                raise ServerFailed(msg)
        if ok():
            return
        time.sleep(0.2)
    msg = f"{what} not reached after {READY_S:.0f} s"
    raise ServerFailed(msg)


def start_server(port: int, workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    """One redis-server on 127.0.0.1:`port`, no persistence, its log in `workdir`.
    In its own session: a Ctrl-C of the caller does not reach it, `stop` does."""
    if shutil.which("redis-server") is None:
        msg = "redis-server is not installed: run `make services`"
        raise ServerFailed(msg)
    return subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(workdir / f"redis-{port}.log"),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(procs: list[subprocess.Popen[bytes]], timeout: float = 20) -> None:
    """SIGTERM each server still running, then SIGKILL what has not exited."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=30)


@contextmanager
def redis_server(
    *extra: str, auth: tuple[str, str] | None = None, prefix: str = "presale-redis-"
) -> Iterator[int]:
    """One redis-server of our own with `extra` options; yields its port once it
    answers PING (as `auth`'s user, when given)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        proc = start_server(port, Path(tmp), *extra)
        try:
            wait_for(
                f"Redis {port} answering",
                lambda: "PONG" in cli(port, "ping", auth=auth),
                [proc],
            )
            yield port
        finally:
            stop([proc])


@contextmanager
def redis_cluster(masters: int = 3) -> Iterator[list[int]]:
    """A Redis Cluster of `masters` primaries (no replicas), slots split evenly;
    yields their ports."""
    ports: list[int] = []
    while len(ports) < masters:
        port = free_port(bus=True)
        if port not in ports:
            ports.append(port)
    with tempfile.TemporaryDirectory(prefix="presale-cluster-") as tmp:
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for port in ports:
                procs.append(
                    start_server(
                        port,
                        Path(tmp),
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{port}.conf",
                        "--cluster-node-timeout",
                        "5000",
                    )
                )
            for port in ports:
                wait_for(
                    f"Redis {port} answering",
                    partial(_says, port, "PONG", "ping"),
                    procs,
                )
            created = cli(
                ports[0],
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            )
            if "[OK] All 16384 slots covered" not in created:
                last = " ".join(created.strip().splitlines()[-3:])
                msg = f"redis-cli --cluster create failed: {last[-500:]}"
                raise ServerFailed(msg)
            for port in ports:
                wait_for(
                    f"cluster_state:ok on {port}",
                    partial(_says, port, "cluster_state:ok", "cluster", "info"),
                    procs,
                )
            yield ports
        finally:
            stop(procs)


def keys_by_node(ports: list[int], pattern: str) -> dict[int, int]:
    """How many keys matching `pattern` each node holds (SCAN on each)."""
    counts: dict[int, int] = {}
    for port in ports:
        out = cli(port, "--scan", "--pattern", pattern)
        counts[port] = sum(1 for line in out.splitlines() if line.strip())
    return counts
