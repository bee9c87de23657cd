"""Rehearse a recording: replay it into fresh topics under a fresh campaign with
a worker of our own, wait until every record is applied, compare with `expect`.

The rehearsal starts its own `presale worker` subprocess: its topics and
campaign are new, so no running worker could be reading them, and a CI job then
needs Kafka, Redis and this one command. It cleans up what it made: the worker,
the campaign's Redis keys, its topics (input, output and Faust's own) and its
temporary folder (kept, and named, when the rehearsal fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from tqdm import tqdm

from streams.check import BUYERS_TOLERANCE, check
from streams.connect import kafka_auth
from streams.errors import KafkaUnavailable, PresaleError, RecordingError
from streams.kafka import lag, log_end_offsets
from streams.recordings import read_header
from streams.replay import replay
from streams.settings import Settings, read_settings_file
from streams.store import RedisStore

INPUT_TOPICS = ("clicks", "carts", "orders")

# What the comparison leaves out, and why: printed with every verdict.
LEFT_OUT = (
    "crossed_at_ms (the reference takes orders in file order, the worker as its "
    "partitions interleave), detected_at_ms (the worker's wall clock), alerts "
    "(the reference computes no surges), consumer_lag (0 by then) and "
    "watermark_ms (it depends on where batches split)"
)

# A worker imports Faust and joins its group in 5-15 s on 2 busy cores.
_WORKER_READY_S = 120.0
# The worker's state is deleted right after it stops, so a clean shutdown buys
# nothing; Faust's took 30 s in 2 of 3 rehearsals of a 3-record file (stopped
# while its group was still settling). SIGKILL after 5 s.
_WORKER_STOP_S = 5.0
# Polls of the live report while waiting for the worker to apply everything.
_POLL_S = 0.5


class RehearsalError(PresaleError):
    """The rehearsal could not run to a verdict (worker died, never applied)."""


@dataclass
class Rehearsal:
    """What one rehearsal did and found."""

    campaign_id: str
    topic_prefix: str
    records: int = 0
    differences: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    kept: Path | None = None  # the temporary folder, kept when it failed
    cleanup_problem: str | None = None

    @property
    def passed(self) -> bool:
        return not self.differences


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def fresh_settings(settings: Settings, tag: str, data_dir: Path) -> Settings:
    return replace(
        settings,
        campaign_id=f"{settings.campaign_id}-rehearse-{tag}",
        topic_prefix=f"{settings.topic_prefix}-rehearse-{tag}",
        web_port=_free_port(),
        metrics_port=_free_port(),
        data_dir=str(data_dir / "faust"),
    )


def worker_settings_file(
    fresh: Settings, settings_file: str | None, folder: Path
) -> Path:
    """The worker's settings: the recording's file (if any) with the fresh
    campaign, prefix, ports and the addresses this process uses. A settings file
    is applied over the environment, so these win over inherited variables."""
    values = read_settings_file(settings_file) if settings_file else {}
    values.update(
        {
            "PRESALE_CAMPAIGN_ID": fresh.campaign_id,
            "PRESALE_TOPIC_PREFIX": fresh.topic_prefix,
            "PRESALE_WEB_PORT": str(fresh.web_port),
            "PRESALE_METRICS_PORT": str(fresh.metrics_port),
            "PRESALE_DATA_DIR": fresh.data_dir,
            "PRESALE_KAFKA_BOOTSTRAP": fresh.kafka_bootstrap,
            "PRESALE_REDIS_URL": fresh.redis_url,
        }
    )
    for name in ("PRESALE_BASELINE_CSV", "PRESALE_SURGE_BASELINE_CSV"):
        if name in values:  # read_settings_file made it relative to the cwd
            values[name] = str(Path(values[name]).resolve())
    path = folder / "worker.settings.json"
    path.write_text(json.dumps(values, indent=1), encoding="utf-8")
    path.chmod(0o600)  # the Redis URL may hold a password
    return path


def recorded_partitions(path: str, default: int) -> dict[str, int]:
    """The partition counts a versioned recording was captured from, so the
    fresh topics match and every record lands in its recorded partition."""
    try:
        header = read_header(path)  # a RecordingError names the file and line
    except (OSError, EOFError) as exc:  # EOFError: a gzip cut short
        msg = f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
        raise RecordingError(msg) from exc
    counts = (header or {}).get("partitions") or {}
    return {
        short: counts[short]
        if type(counts.get(short)) is int and counts[short] > 0
        else default
        for short in INPUT_TOPICS
    }


async def _admin(settings: Settings) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        request_timeout_ms=30_000,
        **kafka_auth(settings),
    )
    try:
        await admin.start()
    except (KafkaError, OSError) as exc:
        await admin.close()
        msg = f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}"
        raise KafkaUnavailable(msg) from exc
    return admin


async def create_input_topics(settings: Settings, partitions: dict[str, int]) -> None:
    admin = await _admin(settings)
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [NewTopic(settings.topic(s), partitions[s], 1) for s in INPUT_TOPICS]
            )
    finally:
        await admin.close()


async def delete_topics(settings: Settings) -> list[str]:
    """Delete the rehearsal's topics: `<prefix>.*` and Faust's `<app id>-*`."""
    admin = await _admin(settings)
    try:
        names = [
            t
            for t in await admin.list_topics()
            if t.startswith(settings.topic_prefix + ".")
            or t.startswith(settings.app_id + "-")
        ]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()


class _Worker:
    """The rehearsal's own `presale worker` subprocess."""

    def __init__(self, settings: Settings, settings_file: Path, log: Path) -> None:
        self.settings = settings
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streams.cli",
                    "worker",
                    "--loglevel",
                    "warning",
                    "--settings",
                    str(settings_file),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us; we stop it
            )

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-1:]
            msg = f"the rehearsal's worker exited {code}: {' '.join(tail)[:300]}"
            raise RehearsalError(msg)

    async def wait_ready(self) -> None:
        url = f"http://127.0.0.1:{self.settings.web_port}/health"
        deadline = time.monotonic() + _WORKER_READY_S
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                await asyncio.to_thread(urllib.request.urlopen(url, timeout=5).close)
                return
            except OSError:
                await asyncio.sleep(0.3)
        msg = f"the rehearsal's worker was not ready after {_WORKER_READY_S:.0f} s"
        raise RehearsalError(msg)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=_WORKER_STOP_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


class _Expect:
    """`presale expect` of the recording, in a subprocess, with the worker's
    settings file: the same campaign and rules as the worker."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, settings_file: Path, path: str) -> _Expect:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streams.cli",
            "expect",
            "--settings",
            str(settings_file),
            path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return cls(proc)

    async def report(self) -> dict[str, Any]:
        out, err = await self.proc.communicate()
        if self.proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines() or ["no output"]
            msg = lines[-1].removeprefix("presale: error: ")
            raise RecordingError(msg)
        report: dict[str, Any] = json.loads(out)
        return report

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def backlog(store: RedisStore, settings: Settings) -> tuple[int, int]:
    """(consumer_lag, records on the input topics): the cheap poll."""
    ends = await log_end_offsets(settings, INPUT_TOPICS)
    applied = await store.applied_offsets(ends)
    return lag(ends, applied), sum(ends.values())


async def live_report(store: RedisStore, settings: Settings) -> dict[str, Any]:
    """`presale report --json` of the fresh campaign. In this order, as there:
    end offsets, applied offsets, counters; so lag 0 means complete counters."""
    ends = await log_end_offsets(settings, INPUT_TOPICS)
    applied = await store.applied_offsets(ends)
    report = await store.report()
    report["consumer_lag"] = lag(ends, applied)
    return report


async def wait_applied(
    store: RedisStore,
    settings: Settings,
    records: int,
    worker: _Worker,
    timeout: float,
    progress: bool,
) -> dict[str, Any]:
    """Poll the lag (not the whole report: first-hour's has 5,000 brands) until
    it is 0 and every replayed record is on the topics; then read the report."""
    deadline = time.monotonic() + timeout
    behind, published = records, 0
    bar = tqdm(
        total=records, unit="rec", unit_scale=True, desc="applied", disable=not progress
    )
    try:
        while time.monotonic() < deadline:
            worker.check_alive()
            behind, published = await backlog(store, settings)
            bar.update(max(0, published - behind - bar.n))
            if behind == 0 and published >= records:
                report = await live_report(store, settings)
                if report["consumer_lag"] == 0:
                    return report
            await asyncio.sleep(_POLL_S)
    finally:
        bar.close()
    msg = (
        f"not applied after {timeout:.0f} s: consumer_lag {behind:,}, "
        f"{published:,} of {records:,} records on the topics"
    )
    raise RehearsalError(msg)


async def rehearse(
    settings: Settings,
    path: str,
    settings_file: str | None,
    speed: float | None = None,
    timeout: float = 900.0,
    progress: bool = True,
    keep: bool = False,
) -> Rehearsal:
    """Run one rehearsal of `path`; the verdict is in `.differences`."""
    tag = uuid.uuid4().hex[:8]
    folder = Path(tempfile.mkdtemp(prefix=f"presale-rehearse-{tag}-"))
    fresh = fresh_settings(settings, tag, folder)
    result = Rehearsal(fresh.campaign_id, fresh.topic_prefix)
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        result.seconds[name] = now - clock
        clock = now

    worker: _Worker | None = None
    store = RedisStore.from_settings(fresh)
    made = False  # topics or Redis keys of the fresh campaign may exist
    worth_keeping = False  # a failed verdict or a worker that let us down
    expecting: _Expect | None = None
    try:
        # The header first: a missing file or an unknown format fails at once.
        partitions = recorded_partitions(path, fresh.topic_partitions)
        file = worker_settings_file(fresh, settings_file, folder)
        # `presale expect` runs meanwhile, in a process of its own: run first,
        # it took 9-14 s of a 41-47 s rehearsal of first-hour.
        expecting = await _Expect.start(file, path)
        await store.ping()
        made = True
        await create_input_topics(fresh, partitions)
        worker = _Worker(fresh, file, folder / "worker.log")
        await worker.wait_ready()
        lap("worker start")
        replayed = await replay(fresh, [path], speed, progress)
        if replayed.interrupted:
            raise KeyboardInterrupt
        result.records = replayed.published
        lap("replay")
        live = await wait_applied(
            store, fresh, replayed.published, worker, timeout, progress
        )
        lap("apply")
        want = await expecting.report()
        lap("expect (waited for)")
        result.differences = check(live, want)
        worth_keeping = not result.passed
    except RehearsalError as exc:
        worth_keeping = True
        msg = f"{exc} (worker log: {folder / 'worker.log'})"
        raise RehearsalError(msg) from exc
    finally:
        if expecting is not None:
            await expecting.stop()
        if worker is not None:
            worker.stop()  # first: a running worker would write its keys again
            lap("worker stop")
        if made and not keep:
            result.cleanup_problem = await _clean_up(store, fresh)
        await store.close()
        if keep or worth_keeping:
            result.kept = folder
        else:
            shutil.rmtree(folder, ignore_errors=True)
        lap("clean up")
    return result


async def _clean_up(store: RedisStore, fresh: Settings) -> str | None:
    """Delete the campaign's Redis keys and its topics; what failed, if any
    (a failed clean-up is reported, never raised over the verdict)."""
    try:
        await store.reset()
        await delete_topics(fresh)
    except Exception as exc:
        return f"{exc.__class__.__name__}: {exc}"[:300]
    return None


def verdict(result: Rehearsal, path: str) -> list[str]:
    """The lines `presale rehearse` prints."""
    lines = [
        f"rehearsed {path}: {result.records:,} records into "
        f"{result.topic_prefix}.*, campaign {result.campaign_id}",
        "times: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items()),
        f"compared every field of `presale expect` exactly, buyers within "
        f"{BUYERS_TOLERANCE:.0%} (HyperLogLog); left out: {LEFT_OUT}",
    ]
    lines += result.differences[:50]
    if result.differences:
        lines.append(f"FAIL: {len(result.differences):,} differences from expect")
    else:
        lines.append("PASS: the live report equals expect's")
    if result.cleanup_problem:
        lines.append(
            f"note: clean-up of {result.campaign_id} incomplete: "
            f"{result.cleanup_problem}"
        )
    if result.kept is not None:
        lines.append(f"kept the worker's log and settings in {result.kept}")
    return lines
