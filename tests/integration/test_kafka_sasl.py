"""The Kafka SASL settings on a real broker: a second, throw-away Kafka whose
only client listener is SASL_PLAINTEXT with PLAIN (started on free ports from the
project's Kafka jars). With the right user every Kafka client of presale works
(Faust's consumer, producer and admin, the worker's producer and outbox
reader, replay, report's end offsets) and the `small` recording replays to the
exact expected report; a wrong password is one clear line."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest

from streams.check import check
from tests.support.sasl_kafka import sasl_kafka
from tests.support.services import (
    STREAMS,
    Env,
    Worker,
    one_line_error,
    recording_env,
)

pytestmark = pytest.mark.integration

USER = "presale"
PASSWORD = "kpw-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def sasl_port() -> Iterator[int]:
    with sasl_kafka(USER, PASSWORD) as port:
        yield port


def _env(port: int, password: str) -> Env:
    return Env(
        {
            **recording_env("small"),
            "PRESALE_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
            "PRESALE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "PRESALE_KAFKA_SASL_MECHANISM": "PLAIN",
            "PRESALE_KAFKA_SASL_USERNAME": USER,
            "PRESALE_KAFKA_SASL_PASSWORD": password,
        }
    )


def test_sasl_plain_replay_is_exact(sasl_port: int) -> None:
    """Right user and password: exact report (buyers within 2%), milestones
    exact; the password is in no output."""
    env = _env(sasl_port, PASSWORD)
    worker = Worker(env, "sasl", loglevel="info").start()
    try:
        replayed = env.run("replay", "--quiet", str(STREAMS / "small.jsonl.gz"))
        assert replayed.returncode == 0, replayed.stderr
        live = env.wait_applied(alive=[worker], timeout=240)
    finally:
        worker.stop()
    want = json.loads((STREAMS / "small.expected.json").read_text())
    assert check(live, want) == []
    outputs = worker.tail(10_000_000) + replayed.stdout + replayed.stderr
    assert PASSWORD not in outputs


def test_sasl_wrong_password_is_one_line(sasl_port: int) -> None:
    """A wrong password: `presale report`, `replay` and `worker` exit non-zero
    with one line and no traceback, and do not show the password."""
    wrong = "wrong-" + secrets.token_hex(8)
    env = _env(sasl_port, wrong)
    for args in (
        ("report", "--json"),
        ("replay", "--quiet", str(STREAMS / "small.jsonl.gz")),
        ("worker", "--loglevel", "info"),
    ):
        line = one_line_error(env.run(*args, timeout=180), wrong)
        assert "Kafka" in line and "credentials" in line, line
        assert f"SASL user '{USER}'" in line, line
