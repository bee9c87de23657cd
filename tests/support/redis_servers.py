"""Extra real Redis servers for tests, on free ports: one that requires AUTH (an
ACL user) and a 3-master Redis Cluster. Started from Debian's `redis-server` by a
fixture and stopped after it; the shared Redis on 6379 is never touched."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.services import free_port, stop_processes

_READY_S = 60.0


def _free_pair() -> int:
    """A port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port + 10_000)) != 0:
                return port


def _cli(port: int, *args: str, auth: tuple[str, str] | None = None) -> str:
    command = ["redis-cli", "-h", "127.0.0.1", "-p", str(port)]
    if auth:
        command += ["--user", auth[0], "--pass", auth[1], "--no-auth-warning"]
    done = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=30, check=False
    )
    return done.stdout + done.stderr


def _wait(what: str, ok: object, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + _READY_S
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                msg = f"redis-server exited {p.returncode} before {what}"
                raise AssertionError(msg)
        if callable(ok) and ok():
            return
        time.sleep(0.2)
    msg = f"{what} not reached after {_READY_S} s"
    raise AssertionError(msg)


def _start(port: int, workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    if shutil.which("redis-server") is None:
        msg = "redis-server is not installed: run `make services`"
        raise AssertionError(msg)
    log = workdir / f"redis-{port}.log"
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
            str(log),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextmanager
def plain_redis() -> Iterator[int]:
    """A throwaway Redis of our own (no persistence) on a free port; yields the
    port. The unit tests of the atomic step run the real Lua script in it."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="presale-step-") as tmp:
        proc = _start(port, Path(tmp), "--set-max-intset-entries", "8192")
        try:
            _wait("Redis answering", lambda: "PONG" in _cli(port, "ping"), [proc])
            yield port
        finally:
            stop_processes([proc], timeout=20)


@contextmanager
def acl_redis(user: str, password: str) -> Iterator[int]:
    """A Redis whose default user is off: only `user` with `password` gets in.
    Yields its port."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="presale-acl-") as tmp:
        proc = _start(
            port,
            Path(tmp),
            "--user",
            "default",
            "off",
            "--user",
            user,
            "on",
            f">{password}",
            "~*",
            "&*",
            "+@all",
        )
        try:
            _wait(
                "the ACL Redis answering",
                lambda: "PONG" in _cli(port, "ping", auth=(user, password)),
                [proc],
            )
            yield port
        finally:
            stop_processes([proc], timeout=20)


@contextmanager
def redis_cluster(masters: int = 3) -> Iterator[list[int]]:
    """A Redis Cluster of `masters` primaries (no replicas); yields their ports."""
    ports: list[int] = []
    while len(ports) < masters:
        port = _free_pair()
        if port not in ports:
            ports.append(port)
    with tempfile.TemporaryDirectory(prefix="presale-cluster-") as tmp:
        procs = [
            _start(
                port,
                Path(tmp),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                "5000",
            )
            for port in ports
        ]
        try:
            for port in ports:
                _wait(
                    f"Redis {port} answering",
                    lambda port=port: "PONG" in _cli(port, "ping"),
                    procs,
                )
            created = _cli(
                ports[0],
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            )
            if "[OK] All 16384 slots covered" not in created:
                msg = f"redis-cli --cluster create failed: {created[-1500:]}"
                raise AssertionError(msg)
            for port in ports:
                _wait(
                    f"cluster_state:ok on {port}",
                    lambda port=port: (
                        "cluster_state:ok" in _cli(port, "cluster", "info")
                    ),
                    procs,
                )
            yield ports
        finally:
            stop_processes(procs, timeout=20)


def keys_by_node(ports: list[int], pattern: str) -> dict[int, int]:
    """How many keys matching `pattern` each node holds (SCAN on each)."""
    counts: dict[int, int] = {}
    for port in ports:
        out = _cli(port, "--scan", "--pattern", pattern)
        counts[port] = sum(1 for line in out.splitlines() if line.strip())
    return counts
