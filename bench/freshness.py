"""Event-to-Redis freshness of presale under a paced load.

A producer publishes the workload at a fixed rate with every event's `ts` set
to the wall clock as it is built (the campaign starts a minute before), in
produce batches of 5 ms. One record in `PROBE_EVERY` (about 100 a second) is a
probe: a click of a brand of its own. A prober polls Redis every 5 ms for the
probes' brands and records, for each, the wall time its effect became visible
minus its `ts`: producer, broker, fetch, decode, plan and the atomic step, end
to end. The first seconds are a warm-up and are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from bench.kafka_io import create_topics, delete_topics, producer, topic_names
from bench.measure import Processes, RunFailed
from bench.procstat import cpu_seconds
from bench.systems import applied_records, delete_keys, presale_env, start_worker
from bench.workload import PARTITIONS, Workload, paced_value

TICK_S = 0.005
PROBES_PER_S = 100
POLL_S = 0.005


@dataclass(frozen=True, slots=True)
class Freshness:
    rate: float  # records/s offered
    achieved: float  # records/s actually published
    seconds: float
    probes: int
    lost: int  # probes never seen within the drain time
    p50_s: float
    p99_s: float
    max_s: float
    worker_cpu_share: float  # worker CPU seconds per wall second while paced


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class Prober:
    """Polls the probes' brands until each one's click is in Redis."""

    def __init__(self, client: aioredis.Redis, campaign: str) -> None:
        self.client = client
        self.key_prefix = f"presale:{{{campaign}}}:"
        self.pending: dict[str, float] = {}  # brand -> created (wall s)
        self.seen: list[tuple[float, float]] = []  # (created, latency)
        self.stopped = False

    def add(self, brand: str, created_s: float) -> None:
        self.pending[brand] = created_s

    async def run(self) -> None:
        p = self.key_prefix
        while not self.stopped or self.pending:
            brands = list(self.pending)
            if brands:
                async with self.client.pipeline(transaction=False) as pipe:
                    for brand in brands:
                        # The brand's counters (`bc:` per channel, `b:` in
                        # older layouts): either existing means it is applied.
                        pipe.exists(f"{p}bc:{brand}", f"{p}b:{brand}")
                    found = await pipe.execute()
                now = time.time()
                for brand, hit in zip(brands, found, strict=True):
                    if hit:
                        created = self.pending.pop(brand)
                        self.seen.append((created, now - created))
            await asyncio.sleep(POLL_S)


def _probe_value(run: str, n: int, ts_ms: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"probe-{run}-{n}",
            "type": "click",
            "ts": ts_ms,
            "user_id": "u-probe",
            "brand_id": f"probe-{run}-{n}",
            "channel": "search",
        }
    )


async def _paced_load(
    kafka: AIOKafkaProducer,
    workload: Workload,
    topic_prefix: str,
    run: str,
    rate: float,
    seconds: float,
    prober: Prober,
) -> float:
    names = topic_names(topic_prefix)
    records = workload.paced(first_copy=1000)
    probe_every = max(1, int(rate // PROBES_PER_S))
    sent = probes = 0
    futures: list[asyncio.Future[object]] = []
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(rate * elapsed) - sent
        if due > 0:
            now_s = time.time()
            ts = str(int(now_s * 1000)).encode()
            batches: dict[tuple[int, int], Any] = {}  # aiokafka BatchBuilders
            for _ in range(due):
                sent += 1
                if sent % probe_every == 0:
                    probes += 1
                    brand = f"probe-{run}-{probes}"
                    tp = (0, probes % PARTITIONS)
                    value = _probe_value(run, probes, int(now_s * 1000))
                    key: bytes | None = b"u-probe"
                    prober.add(brand, now_s)
                else:
                    record, copy_tag = next(records)
                    tp = (record.topic, record.partition)
                    value, key = paced_value(record, copy_tag, ts), record.key
                batch = batches.get(tp)
                if batch is None:
                    batch = batches[tp] = kafka.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            sends = [
                kafka.send_batch(b, names[t], partition=p)
                for (t, p), b in batches.items()
            ]
            futures.extend(await asyncio.gather(*sends))
            if len(futures) > 2000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.sleep(TICK_S)
    await asyncio.gather(*futures)
    return sent / (time.perf_counter() - started)


async def measure_freshness(
    procs: Processes,
    client: aioredis.Redis,
    workload: Workload,
    stamp: str,
    rate: float,
    seconds: float = 20.0,
    warmup_s: float = 4.0,
) -> Freshness:
    run = f"{stamp}-fresh"
    topic_prefix = f"bench-{run}"
    campaign = f"bench-{run}"
    await create_topics(topic_prefix)
    now_ms = int(time.time() * 1000)
    env = presale_env(
        topic_prefix,
        campaign,
        PRESALE_CAMPAIGN_START_MS=str(now_ms - 60_000),
        PRESALE_CAMPAIGN_END_MS=str(now_ms + 86_400_000),
    )
    worker = start_worker(procs, env, f"d-{run}")
    prober = Prober(client, campaign)
    kafka = producer(linger_ms=0)
    await kafka.start()
    probing = asyncio.ensure_future(prober.run())
    try:
        # Ready when a probe sent now comes back: assigned, fetching, applying.
        deadline = time.monotonic() + 90
        n = 0
        while not prober.seen:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RunFailed("the worker never applied a warm-up probe")
            n += 1
            brand = f"probe-{run}-w{n}"
            value = orjson.dumps(
                {
                    "event_id": brand,
                    "type": "click",
                    "ts": int(time.time() * 1000),
                    "user_id": "u-probe",
                    "brand_id": brand,
                    "channel": "search",
                }
            )
            prober.add(brand, time.time())
            await kafka.send_and_wait(topic_names(topic_prefix)[0], value)
            await asyncio.sleep(0.3)
        prober.seen.clear()
        paced_from = time.time()
        cpu_before = _cpu(worker.pid)
        achieved = await _paced_load(
            kafka, workload, topic_prefix, run, rate, warmup_s + seconds, prober
        )
        cpu_share = (_cpu(worker.pid) - cpu_before) / (time.time() - paced_from)
        prober.stopped = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(probing), timeout=10)
        lost = len(prober.pending)
        prober.pending.clear()
        counted = sorted(
            latency
            for created, latency in prober.seen
            if created >= paced_from + warmup_s
        )
        applied = await applied_records(client, campaign)
        if applied == 0:
            raise RunFailed("nothing applied during the paced load")
    finally:
        prober.stopped = True
        prober.pending.clear()
        await probing
        await kafka.stop()
        await procs.stop([worker])
        await delete_keys(client, f"presale:{{{campaign}}}:")
        await delete_topics(topic_prefix)
    return Freshness(
        rate=rate,
        achieved=achieved,
        seconds=seconds,
        probes=len(counted),
        lost=lost,
        p50_s=_quantile(counted, 0.5),
        p99_s=_quantile(counted, 0.99),
        max_s=counted[-1] if counted else float("nan"),
        worker_cpu_share=cpu_share,
    )


def _cpu(pid: int) -> float:
    return cpu_seconds(pid) or 0.0
