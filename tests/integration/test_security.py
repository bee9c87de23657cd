"""Security settings on real servers: a Redis that requires AUTH (an ACL user,
started on a free port), secrets kept out of every output, the web and metrics
ports on 127.0.0.1 only, and a read-only HTTP API."""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.check import check
from tests.support.redis_servers import acl_redis
from tests.support.services import (
    STREAMS,
    Env,
    Worker,
    one_line_error,
    recording_env,
)

pytestmark = pytest.mark.integration

USER = "presale"
PASSWORD = "pw-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def acl_port() -> Iterator[int]:
    with acl_redis(USER, PASSWORD) as port:
        yield port


def _env(port: int, **more: str) -> Env:
    return Env(
        {**recording_env("small"), "PRESALE_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        | more
    )


@pytest.mark.parametrize(
    "how", ["env", "url", "none"], ids=["env-password", "url-password", "no-auth"]
)
def test_wrong_password_is_one_clear_line(acl_port: int, how: str) -> None:
    """A wrong password (as variables or in the URL) or none at all: `presale
    report` and `presale worker` each exit non-zero with one line naming the
    problem, no traceback, and the password they were given nowhere in it."""
    wrong = "wrong-" + secrets.token_hex(8)
    if how == "env":
        env = _env(acl_port, PRESALE_REDIS_USERNAME=USER, PRESALE_REDIS_PASSWORD=wrong)
    elif how == "url":
        env = _env(
            acl_port, PRESALE_REDIS_URL=f"redis://{USER}:{wrong}@127.0.0.1:{acl_port}/0"
        )
    else:
        env = _env(acl_port)
    for args in (("report", "--json"), ("worker", "--loglevel", "info")):
        line = one_line_error(env.run(*args), wrong)
        assert "Redis" in line, line
        if how != "none":
            assert "credentials" in line, line


def _listening_hosts(port: int) -> set[str]:
    """Local addresses listening on `port` (IPv4), from /proc/net/tcp."""
    hosts = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, _, hexport = local.partition(":")
        if state == "0A" and int(hexport, 16) == port:
            octets = [str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0)]
            hosts.add(".".join(octets))
    return hosts


def _status(method: str, url: str) -> int:
    req = urllib.request.Request(url, data=b"{}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_right_password_works_secrets_never_shown(acl_port: int) -> None:
    """The ACL user with its password: the `small` recording replays to the
    exact expected report; the password is in no output (worker log at info,
    report, replay) and the settings' repr masks it; web and metrics listen on
    127.0.0.1 only; /ready says ready; POST, PUT and DELETE are refused."""
    env = _env(acl_port, PRESALE_REDIS_USERNAME=USER, PRESALE_REDIS_PASSWORD=PASSWORD)
    worker = Worker(env, "acl", loglevel="info").start()
    try:
        replayed = env.run("replay", "--quiet", str(STREAMS / "small.jsonl.gz"))
        assert replayed.returncode == 0, replayed.stderr
        live = env.wait_applied(alive=[worker])
        want = json.loads((STREAMS / "small.expected.json").read_text())
        assert check(live, want) == []
        table = env.run("report")
        assert table.returncode == 0, table.stderr

        # Ready: partitions assigned and the lag of each known (6 x 3 topics).
        deadline = time.monotonic() + 60
        while True:
            ready = json.loads(worker.get("/ready"))
            if ready["ready"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert ready == {"ready": True, "partitions": 18, "lag_known": 18}

        assert _listening_hosts(worker.web_port) == {"127.0.0.1"}
        assert _listening_hosts(worker.metrics_port) == {"127.0.0.1"}
        web = f"http://127.0.0.1:{worker.web_port}"
        metrics = f"http://127.0.0.1:{worker.metrics_port}/metrics"
        for path in ("/report", "/health", "/ready", "/"):
            assert _status("GET", web + path) in (200, 404), path
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                refused = (405,) if path != "/" else (404, 405)
                assert _status(method, web + path) in refused, (method, path)
        assert _status("GET", web + "/report") == 200
        assert _status("GET", metrics) == 200
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert _status(method, metrics) == 405, method
    finally:
        worker.stop()
    outputs = worker.tail(10_000_000) + replayed.stdout + replayed.stderr
    outputs += table.stdout + table.stderr
    assert "presale" in worker.tail(10_000_000)  # the log at info is not empty
    assert PASSWORD not in outputs

    from streams.settings import Settings

    settings = Settings.from_env(env.vars, load=False)
    assert settings.redis_password == PASSWORD
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
