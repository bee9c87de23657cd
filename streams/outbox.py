"""Publish milestones and alerts from the Redis outbox to Kafka, each exactly once.

The atomic apply step appends each new milestone (and the surge judge each
alert) to a Redis stream. One worker at a time holds a lease and publishes that
stream in order, each record with a `presale-id` header: the campaign, its run
and the entry's own id (`d11-2025:1760529600123:gmv_threshold:b1:1000000000`),
so another campaign on the same topics, or the same campaign after `presale
reset`, publishes its own facts.

Two fences keep a record from going out twice (docs/exactly-once.md):
- Kafka's: every holder publishes through a transactional producer with one
  transactional id per campaign and topics. Starting it bumps the producer
  epoch, which aborts the open transaction of every earlier holder and refuses
  everything it sends afterwards, however long its send stalled. Only then
  does the new holder read the output topics (read committed) and skip the ids
  already there.
- Redis's: the lease is a token compared atomically (lua/lease.lua) before each
  send and before each commit, so a holder that lost it stops within one send.

The lease is renewed only after a committed round, or on an idle round once
Kafka has answered: a holder that reaches Redis but not Kafka lets it lapse
within LEASE_MS, and a worker that can publish takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from importlib import resources
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from streams.connect import kafka_auth
from streams.errors import KafkaUnavailable
from streams.kafka import producer as kafka_producer
from streams.metrics import Metrics
from streams.settings import Settings

log = logging.getLogger(__name__)

LEASE_LUA: Final = resources.files("streams").joinpath("lua/lease.lua").read_text()
ID_HEADER = "presale-id"
LEASE_MS = 10_000  # a dead publisher's lease passes on within 10 s
_IDLE_S = 0.1
# A holder whose round failed leaves a lapsed lease to the others for this
# long: they look every 0.1 s, so a worker that can publish takes it first.
_BACKOFF_S = 2.0
_ROUND = 500  # outbox entries a round (one transaction) publishes at most


def published_id(campaign_id: str, run: str, entry_id: str) -> str:
    """The `presale-id` of an outbox entry: campaign, run, then the entry's own id
    (a milestone's `kind:brand:threshold`, an alert's `scope:key:minute`).
    Campaign ids hold no `:` (Settings), so the first two fields parse back."""
    return f"{campaign_id}:{run}:{entry_id}"


def _ignore(futures: list[asyncio.Future[Any]]) -> None:
    """Sends of a given-up round: their outcome (fenced, aborted) is not read."""
    for f in futures:
        f.add_done_callback(lambda done: done.cancelled() or done.exception())


class OutboxPublisher:
    def __init__(
        self,
        settings: Settings,
        client: Redis,
        metrics: Metrics,
        topics: tuple[str, ...] = ("milestones", "alerts"),
    ) -> None:
        self.settings = settings
        self.client = client
        self.metrics = metrics
        self.topics = topics
        prefix = settings.redis_prefix
        self.key = prefix + "outbox"
        self.lease_keys = [
            prefix + "outbox:lease",
            prefix + "outbox:epoch",
            prefix + "run",
        ]
        # One per campaign and topics: every holder's producer fences the last.
        self.transactional_id = (
            f"presale-outbox.{settings.topic_prefix}.{settings.campaign_id}"
        )
        self.owner = uuid.uuid4().hex
        self.token = ""  # the lease token held, "" for none
        self.run_id = ""  # the campaign's run, read with the lease
        self.producer: AIOKafkaProducer | None = None
        self.published: set[str] | None = None
        self._renewed_at = 0.0  # monotonic s of the last renewal
        self._failed_at = -_BACKOFF_S  # monotonic s of the last failed round
        self._lease = client.register_script(LEASE_LUA)

    async def _lease_call(self, op: str) -> bool:
        """One atomic lease operation; True while this publisher holds it."""
        args: list[str | int] = [
            op,
            self.token,
            LEASE_MS,
            self.owner,
            int(time.time() * 1000),
        ]
        try:
            result: Any = await self._lease(keys=self.lease_keys, args=args)
        except NoScriptError:  # Redis restarted and lost its script cache
            self._lease = self.client.register_script(LEASE_LUA)
            result = await self._lease(keys=self.lease_keys, args=args)
        if not result:
            self.token = ""
            return False
        token, run = (v.decode() for v in result)
        if token != self.token:
            log.info("took the outbox lease (epoch %s)", token.partition(":")[0])
            self.token = token
            self._renewed_at = time.monotonic()
        self.run_id = run
        return True

    async def _hold(self) -> bool:
        """Still the holder, or the lease was free and is now ours; never renews."""
        if self.token and await self._lease_call("check"):
            return True
        if time.monotonic() - self._failed_at < _BACKOFF_S:
            return False
        return await self._lease_call("take")

    async def _renew(self) -> None:
        if await self._lease_call("renew"):
            self._renewed_at = time.monotonic()

    async def _start(self) -> None:
        """A transactional producer (its start fences every earlier holder's),
        then every id already committed to the output topics."""
        self.producer = kafka_producer(
            self.settings,
            transactional_id=self.transactional_id,
            # An abandoned transaction holds back read-committed readers until
            # the next holder fences it (within LEASE_MS) or this runs out.
            transaction_timeout_ms=3 * LEASE_MS,
        )
        await asyncio.wait_for(self.producer.start(), LEASE_MS / 1000)
        self.published = await asyncio.wait_for(self.load_published(), LEASE_MS / 1000)

    async def _drop(self) -> None:
        """Forget the producer and what it knew. Its open transaction, if any,
        is aborted by the next start of a producer with its transactional id
        (ours or another holder's): nothing it sent is ever read committed."""
        self.published = None
        p, self.producer = self.producer, None
        if p is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.stop(), 5.0)

    async def load_published(self) -> set[str]:
        """Every id committed to the output topics (they are small: one per fact)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_auto_commit=False,
            # An aborted record (a fenced holder's) was never published.
            isolation_level="read_committed",
            **kafka_auth(self.settings),
        )
        seen: set[str] = set()
        await consumer.start()
        try:
            tps: list[TopicPartition] = []
            for short in self.topics:
                name = self.settings.topic(short)
                parts = consumer.partitions_for_topic(name)
                if parts is None:
                    await consumer._client.force_metadata_update()
                    parts = consumer.partitions_for_topic(name) or set()
                tps.extend(TopicPartition(name, p) for p in parts)
            if not tps:
                return seen
            ends = await consumer.end_offsets(tps)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            remaining = {tp for tp, end in ends.items() if end > 0}
            while remaining:
                batch = await consumer.getmany(timeout_ms=1000)
                for tp, recs in batch.items():
                    for rec in recs:
                        for key, value in rec.headers:
                            if key == ID_HEADER:
                                seen.add(value.decode())
                    if recs and recs[-1].offset + 1 >= ends[tp]:
                        remaining.discard(tp)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        return seen

    async def publish_once(self) -> int:
        """Publish what is waiting; returns how many records went out."""
        held = self.token
        if not await self._hold():
            await self._drop()
            return 0
        if self.token != held:  # a new lease: fence the others, read the topics
            await self._drop()
        if self.producer is None:
            await self._start()
        assert self.producer is not None and self.published is not None
        entries: Any = await self.client.xrange(self.key, count=_ROUND)
        todo = []
        for _entry_id, fields in entries:
            ident = published_id(
                self.settings.campaign_id, self.run_id, fields[b"id"].decode()
            )
            if ident not in self.published:
                todo.append((ident, fields))
        if todo:
            if not await self._publish(todo):
                return 0
        else:
            await self._kafka_answers()
        if entries:
            await self.client.xdel(self.key, *(entry_id for entry_id, _ in entries))
        # Renewed only here: after a committed round, or an idle one with Kafka
        # answering (every LEASE_MS / 5, so a lapse needs 5 missed renewals).
        if todo or time.monotonic() - self._renewed_at > LEASE_MS / 5000:
            await self._renew()
        return len(todo)

    async def _publish(self, todo: list[tuple[str, dict[bytes, bytes]]]) -> bool:
        """One transaction of records; False when the lease was lost meanwhile."""
        assert self.producer is not None and self.published is not None
        p = self.producer
        await p.begin_transaction()
        sent: list[asyncio.Future[Any]] = []
        try:
            for ident, fields in todo:
                if not await self._lease_call("check"):
                    _ignore(sent)
                    await self._drop()
                    return False
                sent.append(
                    await p.send(
                        self.settings.topic(fields[b"topic"].decode()),
                        fields[b"value"],
                        key=fields[b"key"],
                        headers=[(ID_HEADER, ident.encode())],
                    )
                )
            # Past one lease the lease is gone anyway: give the round up.
            await asyncio.wait_for(asyncio.gather(*sent), LEASE_MS / 1000)
            if not await self._lease_call("check"):
                await self._drop()
                return False
            await asyncio.wait_for(p.commit_transaction(), LEASE_MS / 1000)
        except BaseException:
            _ignore(sent)
            await self._drop()  # a commit may or may not have landed: read again
            raise
        for ident, fields in todo:
            self.published.add(ident)
            self.metrics.outbox_published.labels(fields[b"topic"].decode()).inc()
        return True

    async def _kafka_answers(self) -> None:
        """On an idle round due a renewal: fail unless Kafka answers."""
        if time.monotonic() - self._renewed_at <= LEASE_MS / 5000:
            return
        assert self.producer is not None
        try:
            await asyncio.wait_for(
                self.producer.client.fetch_all_metadata(), LEASE_MS / 2000
            )
        except Exception as exc:  # a failed round: no renewal, a new producer
            msg = f"Kafka does not answer the outbox producer: {exc!r}"
            raise KafkaUnavailable(msg) from exc

    async def close(self) -> None:
        """Stop the producer and hand the lease on at once (a stopping worker)."""
        await self._drop()
        if self.token:
            with contextlib.suppress(Exception):
                await self._lease_call("release")

    async def run(self) -> None:
        failures = 0
        try:
            while True:
                try:
                    if await self.publish_once() == 0:
                        await asyncio.sleep(_IDLE_S)
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # keep publishing through Kafka or Redis blips
                    # The stack once, then one line a second while it lasts.
                    failures += 1
                    log.warning(
                        "outbox publishing failed (%d in a row, %r); retrying in 1 s",
                        failures,
                        exc,
                        exc_info=failures == 1,
                    )
                    self._failed_at = time.monotonic()
                    await self._drop()  # re-fence and re-read: nothing goes twice
                    await asyncio.sleep(1.0)
        finally:
            await self.close()
