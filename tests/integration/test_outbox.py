"""The outbox publisher's fences and ids (docs/exactly-once.md, "The outbox").

The first tests drive two publishers in one process on the real Kafka and
Redis. A stalled send is made by holding the publisher's own Kafka send back
before it reaches the client (the broker and Redis are the real ones): what a
partition leader dying under one send looks like to the publisher. The last
ones run real workers: two campaigns and a reset on the same topics, and a
broker outage longer than the lease under two workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

import streams.outbox
from streams.kafka import ensure_topics
from streams.metrics import Metrics
from streams.outbox import ID_HEADER, OutboxPublisher
from streams.settings import Settings
from tests.integration.helpers import poll, reset_after, settled_report
from tests.support.services import (
    KAFKA,
    REDIS,
    ROOT,
    STREAMS,
    Env,
    Worker,
    recording_env,
    workers,
)
from tests.support.topics import read_all

pytestmark = pytest.mark.integration

# Sends made in a context where this is set wait for the event first.
_HELD: contextvars.ContextVar[asyncio.Event | None] = contextvars.ContextVar(
    "held", default=None
)


@pytest.fixture
def held_sends(monkeypatch: pytest.MonkeyPatch) -> Iterator[asyncio.Event]:
    """Every Kafka send from a task started with `_HELD` set waits for its event;
    `stalled` is set once one is waiting."""
    stalled = asyncio.Event()
    real: Callable[..., Awaitable[Any]] = AIOKafkaProducer.send

    async def send(self: AIOKafkaProducer, *args: Any, **kwargs: Any) -> Any:
        gate = _HELD.get()
        if gate is not None and not gate.is_set():
            stalled.set()
            await gate.wait()
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(AIOKafkaProducer, "send", send)
    yield stalled


def campaign(**extra: str) -> Settings:
    tag = uuid.uuid4().hex[:10]
    env = {
        "PRESALE_CAMPAIGN_ID": f"fence-{tag}",
        "PRESALE_TOPIC_PREFIX": f"t{tag}",
        "PRESALE_KAFKA_BOOTSTRAP": KAFKA,
        "PRESALE_REDIS_URL": REDIS,
        **extra,
    }
    return Settings.from_env(env, load=False)


async def fill_outbox(client: aioredis.Redis, settings: Settings, n: int) -> set[str]:
    """n milestone entries, as the apply step writes them; returns their ids."""
    ids = set()
    for i in range(n):
        ident = f"gmv_threshold:b{i}:1000"
        await client.xadd(
            settings.redis_prefix + "outbox",
            {"topic": "milestones", "id": ident, "key": f"b{i}", "value": b"{}"},
        )
        ids.add(ident)
    return ids


def publisher(settings: Settings, client: aioredis.Redis) -> OutboxPublisher:
    return OutboxPublisher(settings, client, Metrics.create())


async def until(probe: Callable[[], Awaitable[bool]], timeout_s: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if await probe():
            return True
        await asyncio.sleep(0.1)
    return False


def published_ids(settings: Settings) -> Counter[str]:
    records = read_all(settings.topic("milestones"))
    return Counter(dict(r.headers)[ID_HEADER].decode() for r in records)


def test_lease_script_compares_tokens() -> None:
    """lua/lease.lua on the real Redis: a free lease is taken with a new epoch;
    a held one is not; a check never extends it; a renew or release with
    another's token changes nothing; the run survives lease hand-overs. (The
    old GET-then-PEXPIRE could extend a lease another worker had just taken.)"""
    settings = campaign()

    async def run() -> None:
        client = aioredis.Redis.from_url(REDIS)
        a, b = publisher(settings, client), publisher(settings, client)
        lease = settings.redis_prefix + "outbox:lease"
        try:
            assert await a._lease_call("take")
            assert a.token.startswith("1:") and a.run_id.isdigit()
            assert not await b._lease_call("take")
            await client.pexpire(lease, 500)
            assert await a._lease_call("check")
            assert int(await client.pttl(lease)) <= 500  # a check does not renew
            b.token = "1:" + b.owner  # a forged or stale token
            assert not await b._lease_call("renew")
            assert not await b._lease_call("release")
            assert int(await client.pttl(lease)) <= 500
            assert await a._lease_call("renew")
            assert int(await client.pttl(lease)) > 500
            run_id = a.run_id
            assert not await a._lease_call("release")  # released: held no more
            assert not await client.exists(lease)
            assert await b._lease_call("take")
            assert b.token.startswith("2:") and b.run_id == run_id
        finally:
            await client.delete(*a.lease_keys)
            await client.aclose()

    asyncio.run(run())


def test_a_stalled_holder_is_fenced(
    held_sends: asyncio.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hole a. Publisher A takes the lease and its first send stalls (held back
    before it reaches Kafka) past the lease; B takes the lease over and publishes
    all 3 entries; then A's send goes on. Each entry must be on the topic (read
    committed) exactly once. Before the fence A sent its stalled record and went
    on through the rest of its round: 6 records, each id twice."""
    monkeypatch.setattr(streams.outbox, "LEASE_MS", 1_000)
    settings = campaign()
    asyncio.run(ensure_topics(settings))

    async def run() -> None:
        client = aioredis.Redis.from_url(REDIS)
        a, b = publisher(settings, client), publisher(settings, client)
        try:
            await fill_outbox(client, settings, 3)
            gate = asyncio.Event()
            context = contextvars.copy_context()
            context.run(_HELD.set, gate)
            task_a = asyncio.get_running_loop().create_task(
                a.publish_once(), context=context
            )
            await asyncio.wait_for(held_sends.wait(), 30)
            await asyncio.sleep(1.5)  # A's lease (1 s) lapses while its send waits
            outbox = settings.redis_prefix + "outbox"

            async def b_done() -> bool:
                await b.publish_once()
                return int(await client.xlen(outbox)) == 0

            assert await until(b_done, 30), "B never published the outbox"
            gate.set()
            # Fenced (an error) or stopped by the lease check: either is right.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task_a, 30)
            # A's next round must see it lost the lease and publish nothing.
            assert await a.publish_once() == 0
        finally:
            await a.close()
            await b.close()
            await client.aclose()

    asyncio.run(run())
    ids = published_ids(settings)
    assert len(ids) == 3, ids
    assert max(ids.values()) == 1, f"published twice: {ids}"


def test_f_holder_without_kafka_lets_the_lease_lapse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hole f. Publisher A reaches Redis but not Kafka (its bootstrap is a port
    nothing listens on) and holds the lease first; B reaches both. Within a few
    leases (3 s each) B must take over and publish all 3 entries, once each.
    Before the fix A renewed its lease every round whatever its sends did, and B
    published nothing in 20 s."""
    monkeypatch.setattr(streams.outbox, "LEASE_MS", 3_000)
    settings = campaign()
    asyncio.run(ensure_topics(settings))
    dead = campaign(
        PRESALE_CAMPAIGN_ID=settings.campaign_id,
        PRESALE_TOPIC_PREFIX=settings.topic_prefix,
        PRESALE_KAFKA_BOOTSTRAP=f"127.0.0.1:{unused_port()}",
    )

    async def run() -> bool:
        client = aioredis.Redis.from_url(REDIS)
        a, b = publisher(dead, client), publisher(settings, client)
        lease = settings.redis_prefix + "outbox:lease"
        outbox = settings.redis_prefix + "outbox"
        tasks: list[asyncio.Task[None]] = []
        try:
            await fill_outbox(client, settings, 3)
            tasks.append(asyncio.ensure_future(a.run()))

            async def a_holds() -> bool:
                return bool(await client.exists(lease))

            assert await until(a_holds, 10), "A never took the lease"
            tasks.append(asyncio.ensure_future(b.run()))

            async def published() -> bool:
                return int(await client.xlen(outbox)) == 0

            return await until(published, 20)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await a.close()
            await b.close()
            await client.aclose()

    assert asyncio.run(run()), "B never took over from the holder without Kafka"
    ids = published_ids(settings)
    assert len(ids) == 3, ids
    assert max(ids.values()) == 1, f"published twice: {ids}"


def unused_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_published_id_names_campaign_and_run() -> None:
    """Hole b, in one process: the `presale-id` of a published entry starts with
    the campaign id and the campaign's run (stored in Redis at its first
    publish); after `presale reset` (every key of the campaign deleted) the same
    entry is published again under a new run. Before, the id was the bare
    `kind:brand:threshold` and the second run published nothing."""
    settings = campaign()
    asyncio.run(ensure_topics(settings))

    async def one_run() -> None:
        client = aioredis.Redis.from_url(REDIS)
        p = publisher(settings, client)
        try:
            await fill_outbox(client, settings, 1)

            async def done() -> bool:
                await p.publish_once()
                return int(await client.xlen(settings.redis_prefix + "outbox")) == 0

            assert await until(done, 30)
        finally:
            await p.close()
            pattern = settings.redis_prefix.replace("{", "\\{").replace("}", "\\}")
            keys = [k async for k in client.scan_iter(match=pattern + "*")]
            if keys:
                await client.delete(*keys)  # what `presale reset` does
            await client.aclose()

    asyncio.run(one_run())
    asyncio.run(one_run())
    ids = published_ids(settings)
    assert len(ids) == 2, ids
    for ident in ids:
        campaign_id, run, local = ident.split(":", 2)
        assert campaign_id == settings.campaign_id
        assert run.isdigit()
        assert local == "gmv_threshold:b0:1000"


SMALL = STREAMS / "small.jsonl.gz"
SMALL_RECORDS = 18_794
SMALL_MILESTONES = 253  # 158 + 35 gmv_threshold, 60 yoy_double


def topic_ids(env: Env, short: str, want: int, timeout_s: float = 60) -> Counter[str]:
    """The `presale-id`s on one output topic (read committed), once it holds at
    least `want` records or `timeout_s` has passed."""
    records = poll(
        lambda: read_all(env.topic(short)),
        lambda recs: len(recs) >= want,
        timeout_s,
        f"{want} records on {env.topic(short)}",
    )
    return Counter(dict(r.headers)[ID_HEADER].decode() for r in records)


def run_split(ident: str) -> tuple[str, str, str]:
    campaign_id, run, local = ident.split(":", 2)
    return campaign_id, run, local


def test_b_two_campaigns_on_the_same_topics_then_a_reset() -> None:
    """Hole b, with real workers on the `small` recording (253 milestones).
    Campaign A, then campaign B on the same topics (B's worker reads the same
    input), then B again after `presale reset`: the milestones topic holds each
    run's 253, 759 records with 759 distinct ids, named by campaign and run.
    Before, ids were `kind:brand:threshold`: B's worker found A's ids on the
    topic and published nothing (253 records, then a timeout)."""
    a = Env(recording_env("small"))
    b = Env(recording_env("small"))
    b.vars["PRESALE_TOPIC_PREFIX"] = a.vars["PRESALE_TOPIC_PREFIX"]

    def one_run(env: Env, replay: bool, total: int) -> None:
        worker = Worker(env, "w").start()
        try:
            if replay:
                env.replay(SMALL)
            live = settled_report(env, SMALL_RECORDS, [worker])
            assert len(live["milestones"]) == SMALL_MILESTONES
            topic_ids(env, "milestones", total)
        finally:
            worker.stop()

    with reset_after(a), reset_after(b):
        one_run(a, True, SMALL_MILESTONES)
        one_run(b, False, 2 * SMALL_MILESTONES)
        b.presale("reset")
        one_run(b, False, 3 * SMALL_MILESTONES)
    ids = topic_ids(a, "milestones", 3 * SMALL_MILESTONES)
    assert len(ids) == 3 * SMALL_MILESTONES and max(ids.values()) == 1
    runs = Counter(run_split(i)[:2] for i in ids)
    assert sorted(runs.values()) == [SMALL_MILESTONES] * 3
    assert Counter(run_split(i)[0] for i in ids) == {
        a.vars["PRESALE_CAMPAIGN_ID"]: SMALL_MILESTONES,
        b.vars["PRESALE_CAMPAIGN_ID"]: 2 * SMALL_MILESTONES,
    }
    per_run: dict[tuple[str, str], set[str]] = {run: set() for run in runs}
    for i in ids:
        campaign_id, run, local = run_split(i)
        per_run[campaign_id, run].add(local)
    assert len({frozenset(v) for v in per_run.values()}) == 1  # the same facts


def test_af_broker_outage_longer_than_the_lease_two_workers() -> None:
    """Holes a and f, with real workers: the `surge` recording (39,393 records;
    milestone thresholds lowered to 1k, 10k and 100k fen so milestones come
    all through it) replayed at 60x into 2 workers, the broker stopped for 15 s
    (the lease is 10 s) 8 s in, while milestones are being published (the
    injected surges, so the alerts, come after it). Afterwards every milestone
    of the report and every alert of the Redis stream is on its topic (read
    committed) exactly once, and nothing else is. Measured: 24 milestones and
    5 or 21 alerts (which alerts a faulted run raises is not yet fixed by the
    stream), 95 to 110 s. On the code before the fences this run published
    nothing twice (the race is narrow: test_a_stalled_holder_is_fenced makes it
    certain); it failed only on the ids, which lacked campaign and run."""
    surge = STREAMS / "surge"
    settings = json.loads((surge / "surge.settings.json").read_text())
    env = Env(
        {
            **settings,
            "PRESALE_SURGE_LATENESS_MS": "5000",
            "PRESALE_MILESTONES_FEN": "1000,10000,100000",
        }
    )
    with reset_after(env), workers(env, 2) as running:
        replay = env.background(
            "replay", "--quiet", "--speed", "60", str(surge / "surge.jsonl.gz")
        )
        try:
            time.sleep(8)
            services("down", "kafka")
            time.sleep(15)
            services("up")
            _out, err = replay.communicate(timeout=300)
            assert replay.returncode == 0, err[-2000:]
        finally:
            replay.kill()
        live = settled_report(env, 39_393, running, timeout_s=240)
        # Every minute judged (the surge clock passes the end), then the outbox.
        time.sleep(10)
        live = env.report()
        assert live["milestones"] and live["alerts"]
        milestone_ids = topic_ids(env, "milestones", len(live["milestones"]))
        alert_ids = topic_ids(env, "alerts", len(env.report()["alerts"]))
        live = env.report()
    assert max(milestone_ids.values()) == 1, "a milestone was published twice"
    assert max(alert_ids.values()) == 1, "an alert was published twice"
    assert {run_split(i)[2] for i in milestone_ids} == {
        f"{m['kind']}:{m['brand_id']}:{m['threshold_fen']}" for m in live["milestones"]
    }
    assert {run_split(i)[2] for i in alert_ids} == {
        a["alert_id"] for a in live["alerts"]
    }
    print(
        f"{len(milestone_ids)} milestones and {len(alert_ids)} alerts, each once "
        "on its topic after a 15 s broker outage"
    )


def services(*args: str) -> None:
    subprocess.run(
        ["bash", str(ROOT / "deploy" / "local" / "services.sh"), *args],
        check=True,
        capture_output=True,
        timeout=180,
    )
