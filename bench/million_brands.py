"""A campaign with a million brands (issue 16): what the worker, the report and
the live page cost. `python -m bench.million_brands [--brands N]`.

A real worker on the local Kafka and Redis (PRESALE_KAFKA_BOOTSTRAP,
PRESALE_REDIS_URL) counts N orders of N distinct brands (one in four a
livestream order in its own room, so N/4 rooms), all within two event-time
minutes, so each minute's surge hash holds N/2 brand cells. Then it prints:
the worker's peak RSS (after the surge judge has judged both minutes), the time
and peak RSS of `presale report --json --top 10`, and the time of GET
/api/live and GET /report?top=10. The campaign's keys and topics are deleted at
the end. Figures of a run are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from redis.exceptions import ResponseError

from bench.procstat import peak_rss_bytes
from streams.kafka import log_end_offsets
from streams.settings import Settings
from streams.store import RedisStore

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_762_704_000_000  # 2025-11-09 16:00 UTC: a whole minute
MINUTE_MS = 60_000
PARTITIONS = 6
MIB = 2**20
T = TypeVar("T")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def order(i: int, n: int) -> bytes:
    """Order i of n: brand i, in minute 0 or 1; one in four in a livestream room."""
    event: dict[str, Any] = {
        "event_id": f"e{i}",
        "type": "order",
        "ts": T0 + (i * 2 * MINUTE_MS) // n,
        "user_id": f"u{i % 50_000}",
        "brand_id": f"brand-{i:07d}",
        "order_id": f"o{i}",
        "amount_fen": 100 + (i * 7_919) % 1_000_000,
    }
    if i % 4 == 0:
        event["channel"] = "livestream"
        event["room_id"] = f"room-{i:07d}"
    return json.dumps(event, separators=(",", ":")).encode()


async def publish(settings: Settings, n: int) -> float:
    """N orders, then one click 5 minutes later (so both minutes complete)."""
    kafka = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks=1,
        linger_ms=20,
        max_batch_size=524_288,
        max_request_size=4 * MIB,
    )
    await kafka.start()
    started = time.perf_counter()
    try:
        orders = settings.topic("orders")
        pending: list[asyncio.Future[Any]] = []
        # Whole produce batches a partition (as bench/kafka_io.py): about 10x
        # the rate of one send() a record.
        for lo in range(0, n, 60_000):
            for p in range(PARTITIONS):
                batch = kafka.create_batch()
                for i in range(lo + p, min(lo + 60_000, n), PARTITIONS):
                    value = order(i, n)
                    if batch.append(key=None, value=value, timestamp=None) is None:
                        pending.append(
                            await kafka.send_batch(batch, orders, partition=p)
                        )
                        batch = kafka.create_batch()
                        batch.append(key=None, value=value, timestamp=None)
                if batch.record_count():
                    pending.append(await kafka.send_batch(batch, orders, partition=p))
            await asyncio.gather(*pending)
            pending = []
        click = {
            "event_id": "late-click",
            "type": "click",
            "ts": T0 + 5 * MINUTE_MS,
            "user_id": "u",
            "brand_id": "brand-0000000",
        }
        for p in range(PARTITIONS):  # every partition's clock moves on
            for topic in ("orders", "clicks", "carts"):
                kind = {"orders": "order", "clicks": "click", "carts": "cart"}[topic]
                value = {**click, "type": kind, "event_id": f"late-{topic}-{p}"}
                if kind == "order":
                    value |= {"order_id": f"late-{p}", "amount_fen": 1}
                pending.append(
                    await kafka.send(
                        settings.topic(topic),
                        json.dumps(value).encode(),
                        partition=p,
                    )
                )
        await asyncio.gather(*pending)
    finally:
        await kafka.stop()
    return time.perf_counter() - started


async def patiently(make: Callable[[], Awaitable[T]]) -> T:
    """`make()`, again while Redis answers BUSY: an atomic step of 40,000 new
    brands runs past Redis's 5 s script threshold, and then every other
    client (this bench too) is refused until it ends."""
    while True:
        try:
            return await make()
        except ResponseError as exc:
            if not str(exc).startswith("BUSY"):
                raise
            await asyncio.sleep(0.5)


async def wait_applied(settings: Settings, store: RedisStore, worker: Any) -> None:
    while True:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited {worker.returncode}")
        ends = await log_end_offsets(settings, ("clicks", "carts", "orders"))
        applied = await patiently(lambda ends=ends: store.applied_offsets(ends))
        if sum(max(0, e - applied.get(tp, -1) - 1) for tp, e in ends.items()) == 0:
            return
        await asyncio.sleep(1.0)


async def wait_judged(store: RedisStore, minute_ms: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        through = await patiently(
            lambda: store.client.hget(store.prefix + "meta", "surge_through")
        )
        if through is not None and int(through) >= minute_ms:
            return True
        await asyncio.sleep(1.0)
    return False


def timed_get(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as resp:
        body: bytes = resp.read()
    return time.perf_counter() - started, body


def report_with_rusage(env: dict[str, str]) -> tuple[float, int, dict[str, Any]]:
    """`presale report --json --top 10`: seconds, peak RSS bytes (wait4's
    rusage of the child), its JSON."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "report", "--json", "--top", "10"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"report exited {proc.returncode}: {err.decode()[-500:]}")
    return seconds, usage.ru_maxrss * 1024, json.loads(out)


def redis_steps(metrics: bytes) -> dict[str, Any]:
    """The worker's atomic steps: how many, their mean, and how many took over
    2.5 s and over 5 s (presale_redis_roundtrip_seconds)."""
    buckets: dict[str, float] = {}
    total = count = 0.0
    for line in metrics.decode().splitlines():
        if line.startswith("presale_redis_roundtrip_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets[le] = float(line.split()[-1])
        elif line.startswith("presale_redis_roundtrip_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("presale_redis_roundtrip_seconds_count"):
            count = float(line.split()[-1])
    return {
        "redis_steps": int(count),
        "redis_step_mean_s": round(total / count, 3) if count else None,
        "redis_steps_over_2_5_s": int(count - buckets.get("2.5", count)),
        "redis_steps_over_5_s": int(count - buckets.get("5.0", count)),
    }


async def cleanup(settings: Settings, store: RedisStore) -> None:
    await patiently(store.reset)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        mine = [
            t
            for t in await admin.list_topics()
            if t.startswith(settings.topic_prefix + ".")
        ]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


async def main(n: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    base = Settings.from_env(os.environ, load=False)
    settings = replace(
        base,
        campaign_id=f"million-{tag}",
        topic_prefix=f"m{tag}",
        start_ms=T0,
        end_ms=T0 + 86_400_000,
    )
    web_port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRESALE_")}
    env |= {
        "PRESALE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "PRESALE_REDIS_URL": settings.redis_url,
        "PRESALE_CAMPAIGN_ID": settings.campaign_id,
        "PRESALE_TOPIC_PREFIX": settings.topic_prefix,
        "PRESALE_CAMPAIGN_START_MS": str(T0),
        "PRESALE_CAMPAIGN_END_MS": str(settings.end_ms),
        "PRESALE_TOPIC_PARTITIONS": str(PARTITIONS),
        "PRESALE_WEB_PORT": str(web_port),
        "PRESALE_METRICS_PORT": str(metrics_port),
        "PRESALE_DATA_DIR": str(ROOT / "var" / "bench-million" / tag),
    }
    log = open(ROOT / "var" / f"bench-million-{tag}.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "warning"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    store = RedisStore.from_settings(settings)
    web = f"http://127.0.0.1:{web_port}"
    figures: dict[str, Any] = {"brands": n, "rooms": n // 4}
    try:
        deadline = time.monotonic() + 120
        while True:  # ready: partitions assigned (the topics exist then)
            try:
                ready = json.loads(timed_get(web + "/ready")[1])
                if ready.get("ready"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit("the worker did not get ready")
            await asyncio.sleep(1.0)
        started = time.perf_counter()
        figures["publish_s"] = round(await publish(settings, n), 1)
        await wait_applied(settings, store, worker)
        figures["applied_s"] = round(time.perf_counter() - started, 1)
        figures["judged"] = await wait_judged(store, T0 + MINUTE_MS, 180)
        pid = worker.pid
        figures["worker_peak_rss_mib"] = round((peak_rss_bytes(pid) or 0) / MIB, 1)

        seconds, rss, report = report_with_rusage(env)
        figures["report_top10_s"] = round(seconds, 2)
        figures["report_top10_peak_rss_mib"] = round(rss / MIB, 1)
        figures["report_top10_brands"] = [b["brand_id"] for b in report["brands"]]
        await asyncio.sleep(1.0)  # past the live cache (0.5 s)
        live_s, live = timed_get(web + "/api/live")
        figures["api_live_s"] = round(live_s, 3)
        figures["api_live_brand_count"] = json.loads(live)["brand_count"]
        figures["api_live_room_count"] = json.loads(live)["room_count"]
        web_s, body = timed_get(web + "/report?top=10")
        figures["web_report_top10_s"] = round(web_s, 3)
        figures["web_report_top10_cached_s"] = round(
            timed_get(web + "/report?top=10")[0], 3
        )
        assert json.loads(body)["brands"] == report["brands"]
        figures["worker_peak_rss_mib_end"] = round((peak_rss_bytes(pid) or 0) / MIB, 1)
        figures |= redis_steps(timed_get(f"http://127.0.0.1:{metrics_port}/metrics")[1])
        info = await patiently(lambda: store.client.info("memory"))
        figures["redis_used_memory_mib"] = round(int(info["used_memory"]) / MIB, 1)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        log.close()
        await cleanup(settings, store)
        await store.close()
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brands", type=int, default=1_000_000)
    args = parser.parse_args()
    result = asyncio.run(main(args.brands))
    for name, value in result.items():
        print(f"{name:>30}: {value}")
    print(json.dumps(result))
