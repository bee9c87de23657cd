"""`presale` commands fail with one readable line, never a traceback.

Each case runs `python -m streams.cli` in a subprocess, with Kafka and Redis
pointed at closed ports, so no service is needed. The cases run concurrently:
2-3 s in all on 2 cores (each takes 0.15-0.45 s, mostly imports).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Port 1 (tcpmux) is closed on any ordinary machine: connections are refused at
# once, so every case fails fast.
CLOSED = {
    "PRESALE_REDIS_URL": "redis://127.0.0.1:1/0",
    "PRESALE_KAFKA_BOOTSTRAP": "127.0.0.1:1",
}
EVENT = '{"event_id":"e1","type":"click","ts":1,"user_id":"u","brand_id":"b"}\n'


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


# "{tmp}" is replaced by a temporary folder holding `events.jsonl`.
CASES: dict[str, Case] = {
    "report, Redis down": Case(("report",)),
    "report --json --top, Redis down": Case(("report", "--json", "--top", "3")),
    "reset, Redis down": Case(("reset",)),
    "top --once, Redis down": Case(("top", "--once")),
    "top, Redis down": Case(("top", "--top", "5")),
    "worker, Redis down": Case(("worker",)),
    "replay of a missing file": Case(("replay", "--quiet", "{tmp}/missing.jsonl")),
    "replay of a missing file among good ones": Case(
        ("replay", "--quiet", "{tmp}/events.jsonl", "{tmp}/missing.jsonl.gz")
    ),
    "worker, missing baseline CSV": Case(
        ("worker",), (("PRESALE_BASELINE_CSV", "{tmp}/missing.csv"),)
    ),
    "reset, bad baseline row": Case(
        ("reset", "--campaign", "c2"), (("PRESALE_BASELINE_CSV", "{tmp}/bad.csv"),)
    ),
    "worker, bad start": Case(("worker",), (("PRESALE_CAMPAIGN_START_MS", "abc"),)),
    "report, bad start": Case(
        ("report", "--json"), (("PRESALE_CAMPAIGN_START_MS", "1.5e12"),)
    ),
    "replay, bad start": Case(
        ("replay", "{tmp}/events.jsonl"), (("PRESALE_CAMPAIGN_START_MS", "x"),)
    ),
    "reset, end before start": Case(
        ("reset",),
        (("PRESALE_CAMPAIGN_START_MS", "2000"), ("PRESALE_CAMPAIGN_END_MS", "1000")),
    ),
    "report, bad campaign id": Case(("report",), (("PRESALE_CAMPAIGN_ID", "a b"),)),
    "worker, bad channel baseline row": Case(
        ("worker",), (("PRESALE_CHANNEL_BASELINE_CSV", "{tmp}/bad.csv"),)
    ),
    "report, negative threshold": Case(
        ("report",), (("PRESALE_MILESTONES_FEN", "100,-1"),)
    ),
}
# Reported separately (see the test below): aiokafka logs its own line too.
KAFKA_DOWN = "replay, Kafka down"
ALL_CASES = {**CASES, KAFKA_DOWN: Case(("replay", "--quiet", "{tmp}/events.jsonl"))}


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def _env(case: Case, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRESALE_")}
    env.update(CLOSED)
    env.update({k: v.replace("{tmp}", str(tmp)) for k, v in case.env})
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Run every case at once and collect exit code, stdout and stderr."""
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "events.jsonl").write_text(EVENT, encoding="utf-8")
    (tmp / "bad.csv").write_text("b1,100\nb2,lots\n", encoding="utf-8")
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "streams.cli"]
            + [a.replace("{tmp}", str(tmp)) for a in case.args],
            cwd=ROOT,
            env=_env(case, tmp),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, case in ALL_CASES.items()
    }
    results: dict[str, Outcome] = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += "\n(timed out after 60 s)"
        results[name] = Outcome(proc.returncode, out, err)
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_one_line_error(outcomes: dict[str, Outcome], name: str) -> None:
    """The command exits non-zero with exactly one line on stderr, starting with
    "presale: error:", and no traceback."""
    result = outcomes[name]
    lines = result.stderr.splitlines()
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("presale: error:"), result.stderr


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("report, Redis down", "Redis"),
        ("reset, Redis down", "Redis"),
        ("worker, Redis down", "Redis"),
        ("replay of a missing file", "missing.jsonl"),
        ("replay of a missing file among good ones", "missing.jsonl.gz"),
        ("worker, missing baseline CSV", "missing.csv"),
        ("reset, bad baseline row", "bad.csv:2:"),
        ("worker, bad start", "PRESALE_CAMPAIGN_START_MS"),
        ("report, bad start", "PRESALE_CAMPAIGN_START_MS"),
        ("replay, bad start", "PRESALE_CAMPAIGN_START_MS"),
        ("reset, end before start", "PRESALE_CAMPAIGN_END_MS"),
        ("report, bad campaign id", "PRESALE_CAMPAIGN_ID"),
        ("report, negative threshold", "PRESALE_MILESTONES_FEN"),
        ("worker, bad channel baseline row", "bad.csv:1:"),
    ],
)
def test_error_names_the_cause(
    outcomes: dict[str, Outcome], name: str, words: str
) -> None:
    """The one error line names what to fix: the service, file or variable."""
    assert words in outcomes[name].stderr


def test_replay_with_kafka_down(outcomes: dict[str, Outcome]) -> None:
    """`replay` with Kafka down exits non-zero, without a traceback, and its last
    stderr line is the one "presale: error:" line naming the Kafka address."""
    result = outcomes[KAFKA_DOWN]
    lines = result.stderr.splitlines()
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr + result.stdout
    assert [x for x in lines if x.startswith("presale: error:")] == lines[-1:]
    assert "127.0.0.1:1" in lines[-1]


def test_cases_fail_fast(outcomes: dict[str, Outcome]) -> None:
    """No case hangs: every one ended by itself within the 60 s limit."""
    assert not [n for n, r in outcomes.items() if "timed out" in r.stderr]
