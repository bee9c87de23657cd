"""`presale record`, `expect` and `rehearse` (and `replay` of the new formats)
fail with one readable line naming the cause, never a traceback.

As in test_cli_errors.py: subprocesses run concurrently, Kafka and Redis point
at closed ports, so no service is needed (about 2 s in all on 2 cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLOSED = {
    "PRESALE_REDIS_URL": "redis://127.0.0.1:1/0",
    "PRESALE_KAFKA_BOOTSTRAP": "127.0.0.1:1",
}
FILES = {
    "newer.jsonl": '{"format":"presale-recording","version":9}\n',
    "badline.jsonl": '{"type":"click","user_id":"u1"}\n[1, 2]\n',
    "badrecord.jsonl": '{"format":"presale-recording","version":1}\n'
    '{"topic":"clicks","partition":0,"ts":1,"raw":"x","raw_b64":"eA=="}\n',
    "cut.jsonl.gz": "\x1f\x8b\x08\x00",
}

# name -> (arguments, words the one error line must hold); {tmp} is a folder
# holding FILES.
CASES: dict[str, tuple[tuple[str, ...], str]] = {
    "record, Kafka down": (("record", "--quiet", "{tmp}/out.jsonl.gz"), "127.0.0.1:1"),
    "record into a missing folder": (
        ("record", "{tmp}/no/out.jsonl.gz"),
        "no such folder",
    ),
    "expect of a missing file": (("expect", "{tmp}/missing.jsonl"), "missing.jsonl"),
    "expect, newer format version": (("expect", "{tmp}/newer.jsonl"), "version 9"),
    "expect, bad line": (("expect", "{tmp}/badline.jsonl"), "badline.jsonl:2"),
    "expect, bad record line": (
        ("expect", "{tmp}/badrecord.jsonl"),
        "badrecord.jsonl:2",
    ),
    "expect, gzip cut short": (("expect", "{tmp}/cut.jsonl.gz"), "cut.jsonl.gz"),
    "replay, gzip cut short": (("replay", "{tmp}/cut.jsonl.gz"), "cut.jsonl.gz"),
    "replay, newer format version": (
        ("replay", "--quiet", "{tmp}/newer.jsonl"),
        "version 9",
    ),
    "rehearse of a missing file": (
        ("rehearse", "--quiet", "{tmp}/missing.jsonl.gz"),
        "missing.jsonl.gz",
    ),
    "rehearse, newer format version": (
        ("rehearse", "{tmp}/newer.jsonl"),
        "version 9",
    ),
    "rehearse, Redis down": (("rehearse", "{tmp}/events.jsonl"), "Redis"),
}


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, subprocess.CompletedProcess[str]]:
    tmp = tmp_path_factory.mktemp("cli")
    for name, text in FILES.items():
        (tmp / name).write_bytes(text.encode("latin-1"))
    (tmp / "events.jsonl").write_text(
        '{"event_id":"e1","type":"click","ts":1,"user_id":"u","brand_id":"b"}\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRESALE_")}
    env.update(CLOSED, PYTHONDONTWRITEBYTECODE="1")
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "streams.cli"]
            + [a.replace("{tmp}", str(tmp)) for a in args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, _words) in CASES.items()
    }
    results = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += "\n(timed out after 60 s)"
        results[name] = subprocess.CompletedProcess(
            proc.args, proc.returncode, out, err
        )
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_one_line_error_naming_the_cause(
    outcomes: dict[str, subprocess.CompletedProcess[str]], name: str
) -> None:
    """Exit 2, exactly one stderr line `presale: error: ...` holding the file,
    line, version or address at fault; no traceback."""
    result = outcomes[name]
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("presale: error: "), lines
    assert CASES[name][1] in lines[0]
