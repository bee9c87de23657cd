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
from typing import Any

READY_S = 60.0
# Candidate ports: a port and its cluster bus port (port + 10000) both below
# the kernel's ephemeral range (32768 up), where an outgoing connection could
# hold one; above the well-known services; each process starts elsewhere.
_FIRST, _LAST = 12_000, 22_767
_ports = itertools.count(_FIRST + (os.getpid() % 400) * 25)


class ServerFailed(RuntimeError):
    """A redis-server did not start, or the cluster was not formed."""


def _port_free(port: int) -> bool:
    """Nothing listens on it and nothing holds it: we could bind it ourselves."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(bus: bool = False) -> int:
    """A port nothing uses (and, with `bus`, its port + 10000 neither)."""
    global _ports
    for _ in range(2):
        for port in _ports:
            if port > _LAST:
                break
            if _port_free(port) and (not bus or _port_free(port + 10_000)):
                return port
        _ports = itertools.count(_FIRST)
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


_logs: dict[int, Path] = {}  # pid -> its log file


def _last_line(log: Path | None) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines() if log else []
    except OSError:
        return ""
    return f": {lines[-1].strip()}" if lines else ""


def wait_for(
    what: str, ok: Callable[[], bool], procs: list[subprocess.Popen[bytes]]
) -> None:
    """Until `ok()`; fails when a server exits first or after READY_S."""
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                msg = f"redis-server exited {p.returncode} before {what}"
                raise ServerFailed(msg + _last_line(_logs.get(p.pid)))
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
    log = workdir / f"redis-{port}.log"
    proc = subprocess.Popen(
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
            str(log),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _logs[proc.pid] = log
    return proc


def stop(procs: list[subprocess.Popen[Any]], timeout: float = 20) -> None:
    """SIGTERM each process still running, then SIGKILL what has not exited."""
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


def cluster_node_options(port: int) -> tuple[str, ...]:
    """The redis-server options of a cluster node of ours: its files named by
    its port (the nodes share one directory), so it starts again on them."""
    return (
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        f"nodes-{port}.conf",
        "--cluster-node-timeout",
        "5000",
        "--cluster-announce-ip",  # a lone node knows no address
        "127.0.0.1",
        "--appenddirname",
        f"appendonly-{port}",
    )


@contextmanager
def redis_cluster(masters: int = 3, *extra: str) -> Iterator[list[int]]:
    """A Redis Cluster of `masters` primaries (no replicas), slots split evenly
    (by `redis-cli --cluster create`; by hand below 3 masters, which it refuses);
    yields their ports. `extra`: more redis-server options for every node."""
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
                    start_server(port, Path(tmp), *cluster_node_options(port), *extra)
                )
            for port in ports:
                wait_for(
                    f"Redis {port} answering",
                    partial(_says, port, "PONG", "ping"),
                    procs,
                )
            if masters >= 3:
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
            else:  # `--cluster create` wants 3 masters at least: as it would do
                _assign_slots(ports)
            for port in ports:
                wait_for(
                    f"cluster_state:ok on {port}",
                    partial(_says, port, "cluster_state:ok", "cluster", "info"),
                    procs,
                )
            yield ports
        finally:
            stop(procs)


def _assign_slots(ports: list[int]) -> None:
    """Split the 16384 slots evenly over `ports` and join them in one cluster."""
    for i, port in enumerate(ports):
        if i:
            cli(port, "cluster", "meet", "127.0.0.1", str(ports[0]))
        low, high = i * 16384 // len(ports), (i + 1) * 16384 // len(ports) - 1
        out = cli(port, "cluster", "addslotsrange", str(low), str(high))
        if "OK" not in out:
            msg = f"CLUSTER ADDSLOTSRANGE {low} {high} on {port} failed: {out}"
            raise ServerFailed(msg.strip())


def keys_by_node(ports: list[int], pattern: str) -> dict[int, int]:
    """How many keys matching `pattern` each node holds (SCAN on each)."""
    counts: dict[int, int] = {}
    for port in ports:
        out = cli(port, "--scan", "--pattern", pattern)
        counts[port] = sum(1 for line in out.splitlines() if line.strip())
    return counts
