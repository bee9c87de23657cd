"""One batch's way through the worker: decode, plan, dead-letter, apply, measure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter

from aiokafka.structs import ConsumerRecord
from faust.types import TP

from processors.counting import Record, Rejected
from processors.state import Applied, Stale
from streams.codecs import dead_letter, decode
from streams.kafka import RenewableProducer
from streams.metrics import Metrics
from streams.retry import TRANSIENT, retrying, transient_kind
from streams.settings import Settings
from streams.store import AnyPlan, Store

log = logging.getLogger(__name__)
_offset = attrgetter("offset")


# A plan refused as stale is rebuilt on the fresh offsets; more than a few in a
# row means workers are fighting over partitions, which a rebalance settles.
_MAX_ATTEMPTS = 8


@dataclass
class _Inflight:
    """A batch whose atomic step was sent to the store and not yet settled."""

    batch: Mapping[TP, list[ConsumerRecord]]
    records: list[Record]
    plan: AnyPlan
    started: float
    task: asyncio.Future[Applied | Stale]
    gaps: frozenset[str] = frozenset()
    refused: bool = False


class Pipeline:
    """The worker's batch handler and offset loader, over one store."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        producer: RenewableProducer | None,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.rules = settings.rules
        self.store = store
        self.producer = producer
        self.metrics = metrics
        self.prefix = settings.topic_prefix + "."
        self.deadletter_topic = settings.topic("deadletter")
        # "short:partition" -> last offset applied, counting the step in flight,
        # and the last one the store confirmed.
        self.applied: dict[str, int] = {}
        self.confirmed: dict[str, int] = {}
        self.inflight: _Inflight | None = None
        # "short:partition" -> first offset of a batch that began past the next
        # offset to apply; seen a second time after a re-read, the gap is Kafka's.
        self.gaps: dict[str, int] = {}
        self.latest_event_ms = 0
        # Called after each applied batch (the surge judge looks at once).
        self.after_apply: Callable[[], None] | None = None

    def name(self, tp: TP) -> str:
        return f"{tp.topic.removeprefix(self.prefix)}:{tp.partition}"

    async def load_offsets(self, tps: set[TP]) -> dict[TP, int]:
        """Next offset to read of each partition: one past the last applied."""

        def failed(exc: BaseException, _delay_s: float) -> None:
            log.warning("reading offsets failed (%r); retrying", exc)

        stored = await retrying(
            lambda _retry: self.store.applied_offsets(self.name(tp) for tp in tps),
            failed,
        )
        self.applied.update(stored)
        self.confirmed.update(stored)
        return {tp: stored[self.name(tp)] + 1 for tp in tps}

    def decode(self, batch: Mapping[TP, list[ConsumerRecord]]) -> list[Record]:
        """Each record's event or rejection, in the batch's order."""
        limit = self.settings.max_record_bytes
        records: list[Record] = []
        for tp, recs in batch.items():
            short = tp.topic.removeprefix(self.prefix)
            name = f"{short}:{tp.partition}"
            records.extend(
                (name, r.offset, decode(r.value, short, limit)) for r in recs
            )
        return records

    async def send_dead_letters(
        self, batch: Mapping[TP, list[ConsumerRecord]], rejections: list[Rejected]
    ) -> None:
        """Publish a plan's rejected records and wait until Kafka has them."""
        if self.producer is None:
            return
        # Each found in its partition's records, which come in offset order
        # (rejections are ~0.5% of records: no pass over the whole batch).
        by_name = {self.name(tp): (tp, recs) for tp, recs in batch.items()}
        futures = []
        for name, offset, rejection in rejections:
            tp, recs = by_name[name]
            rec = recs[bisect_left(recs, offset, key=_offset)]
            value = dead_letter(rejection, tp.topic, tp.partition, offset, rec.value)
            futures.append(
                await self.producer.send(self.deadletter_topic, value, key=rec.key)
            )
        if futures:
            await asyncio.gather(*futures)

    def count_inputs(self, plan: AnyPlan) -> None:
        """Count the records a plan applied (not those skipped as already applied)."""
        for (topic, kind), n in plan.inputs.items():
            self.metrics.records_in.labels(topic, kind).inc(n)

    async def on_batch(
        self, batch: Mapping[TP, list[ConsumerRecord]]
    ) -> dict[TP, int] | None:
        """Apply one fetched batch exactly once; returns partitions to re-read.

        The batch's atomic step is sent to Redis and left running: the next
        batch is decoded and planned while Redis applies this one (the two run
        on different cores), and its outcome is settled before the next step is
        sent, or by `flush()` when no batch follows.

        Redis or Kafka going away (a restart, a network blip) never kills the
        worker: the batch is retried until they are back. Retrying is safe: the
        atomic step refuses a plan whose offsets already moved, so a step that
        ran but whose answer was lost is recognised and skipped.
        """
        return await retrying(
            lambda retry: self._next_batch(batch, retry),
            self._failed("batch"),
            self._renew_producer,
        )

    async def flush(self) -> dict[TP, int] | None:
        """Settle the step in flight (when idle, before a rebalance, at stop)."""
        return await retrying(lambda _retry: self._settle(), self._failed("settling"))

    def _failed(self, what: str) -> Callable[[BaseException, float], None]:
        """A transient failure of `what`: counted, and one warning line."""

        def failed(exc: BaseException, delay_s: float) -> None:
            self.metrics.retries.labels(transient_kind(exc)).inc()
            log.warning("%s failed (%r); retrying in %.1f s", what, exc, delay_s)

        return failed

    async def _renew_producer(self, exc: BaseException) -> None:
        """A producer the failure left unusable is replaced before the retry."""
        if self.producer is not None:
            with contextlib.suppress(*TRANSIENT):  # tried again next time
                await self.producer.renew_if_poisoned(exc)

    async def went_back(self, stored: Mapping[TP, int]) -> dict[TP, int] | None:
        """Partitions whose offset in the store is below what it confirmed to
        this worker, and where to read them again from; None when there are none.

        Redis restarted from an AOF written every second can lose the last
        second of steps. A partition that still gets records finds out at its
        next step (the store answers stale, `_redo`); a quiet one never would,
        so the worker's lag timer calls this with the stored offsets of its
        partitions (`streams/app.py`), holding the consumer's batch lock. The
        step in flight is settled first: only then is `confirmed` exact.
        """
        if not any(
            o < self.confirmed.get(self.name(tp), -1) for tp, o in stored.items()
        ):
            return None
        reseek = await self.flush() or {}
        fresh = await self.store.applied_offsets(self.name(tp) for tp in stored)
        for tp in stored:
            name = self.name(tp)
            if fresh[name] < self.confirmed.get(name, -1):
                log.warning(
                    "%s: the store went back to offset %d from %d; re-reading",
                    name,
                    fresh[name],
                    self.confirmed[name],
                )
                self.metrics.store_went_back.labels(name.partition(":")[0]).inc()
                self.applied[name] = self.confirmed[name] = fresh[name]
                reseek[tp] = fresh[name] + 1
        return reseek or None

    def _skipped(
        self, batch: Mapping[TP, list[ConsumerRecord]], retry: bool
    ) -> tuple[dict[TP, int] | None, frozenset[str]]:
        """Partitions whose records begin past the next offset to apply, and
        where to re-read them from.

        Every seek is to the store's offsets, so a batch that begins further on
        means records were fetched and never applied: a batch dropped in a
        rebalance, or a re-read that was asked for and lost. Applying it would
        move the offsets past those records for good. Instead the partition is
        read again from the next offset to apply; if it begins at the same place
        again, Kafka has nothing in between (transaction markers, compaction,
        retention) and the batch is applied; a batch tried again after a failure
        was not read again, so it proves nothing. Returns those partitions, and
        the ones whose gap is Kafka's (their plans may begin past the store's
        offset: `plan_batch`'s `gaps`).
        """
        skipped: dict[TP, int] | None = None
        accepted: frozenset[str] = frozenset()
        gaps = self.gaps
        for tp, recs in batch.items():
            name = self.name(tp)
            first = recs[0].offset
            after = self.applied.get(name, -1)
            if first <= after + 1:
                if gaps:
                    gaps.pop(name, None)
                continue
            if not retry and gaps.get(name) == first:  # read again: Kafka's gap
                del gaps[name]
                accepted = accepted | {name}
                continue
            gaps[name] = first
            log.warning(
                "%s: batch begins at offset %d, past %d, the next to apply; "
                "reading again from %d",
                name,
                first,
                after + 1,
                after + 1,
            )
            self.metrics.offset_gaps.labels(name.partition(":")[0]).inc()
            if skipped is None:
                skipped = {}
            skipped[tp] = after + 1
        return skipped, accepted

    async def _next_batch(
        self, batch: Mapping[TP, list[ConsumerRecord]], retry: bool
    ) -> dict[TP, int] | None:
        started = time.perf_counter()
        skipped, gaps = self._skipped(batch, retry)
        if skipped is not None:
            batch = {tp: recs for tp, recs in batch.items() if tp not in skipped}
            if not batch:
                return skipped
        records = self.decode(batch)
        # Planned on the offsets the step in flight will leave (optimistic)...
        plan = self.store.plan(records, self.applied, gaps)
        reseek = await self._settle()
        if reseek is not None:
            # The store went back: everything past its offsets is read again.
            fresh = await self.store.applied_offsets(self.name(tp) for tp in batch)
            reseek.update({tp: fresh[self.name(tp)] + 1 for tp in batch})
            return reseek if skipped is None else {**skipped, **reseek}
        if any(  # ...and planned again if that step was refused and redone.
            self.applied.get(n, -1) != before for n, (before, _) in plan.offsets.items()
        ):
            plan = self.store.plan(records, self.applied, gaps)
            holes = self._holes(batch, plan)
            if holes:  # the redo left the store behind this batch's first records
                return holes if skipped is None else {**skipped, **holes}
        if plan.rejections:  # ~0.5% of records: most batches have a few
            await self.send_dead_letters(batch, plan.rejections)
        if plan.empty:
            return skipped
        for name, (_before, last) in plan.offsets.items():
            self.applied[name] = last
        # Sent in full before the next batch is planned (store.send), so Redis
        # applies this step while the worker plans the next one.
        self.inflight = _Inflight(
            batch, records, plan, started, await self._send(plan), gaps
        )
        return skipped

    def _holes(
        self, batch: Mapping[TP, list[ConsumerRecord]], plan: AnyPlan
    ) -> dict[TP, int]:
        """Partitions whose plan does not begin right after the offset applied
        (another worker took them, went on, and the store then lost its steps):
        applying would skip the records between, so they are read again from
        the next offset to apply."""
        holes: dict[TP, int] = {}
        for tp in batch:
            name = self.name(tp)
            span = plan.offsets.get(name)
            applied = self.applied.get(name, -1)
            if span is not None and span[0] != applied:
                log.warning(
                    "%s: the batch begins past offset %d, the next to apply; "
                    "reading again from there",
                    name,
                    applied + 1,
                )
                self.metrics.offset_gaps.labels(name.partition(":")[0]).inc()
                holes[tp] = applied + 1
        return holes

    async def _send(self, plan: AnyPlan) -> asyncio.Future[Applied | Stale]:
        t0 = time.perf_counter()
        try:
            outcome = await self.store.send(plan, int(time.time() * 1000))
        except TRANSIENT as exc:  # settled like a step whose answer was lost
            failed: asyncio.Future[Applied | Stale] = asyncio.Future()
            failed.set_exception(exc)
            return failed

        async def settled() -> Applied | Stale:
            result = await outcome
            self.metrics.redis_seconds.observe(time.perf_counter() - t0)
            return result

        return asyncio.ensure_future(settled())

    async def _apply(self, plan: AnyPlan) -> Applied | Stale:
        t0 = time.perf_counter()
        result = await self.store.apply(plan, int(time.time() * 1000))
        self.metrics.redis_seconds.observe(time.perf_counter() - t0)
        return result

    async def _settle(self) -> dict[TP, int] | None:
        """Wait for the step in flight; redo its batch if the store refused it."""
        # The step stays in flight until settled: if settling fails (Redis
        # away), the next try settles it again, so its records are never lost.
        inflight = self.inflight
        if inflight is None:
            return None
        try:
            result: Applied | Stale | None = await inflight.task
        except TRANSIENT as exc:  # unknown whether it ran: the offsets will say
            log.warning("step in flight failed (%r); checking the store", exc)
            result = None
        if isinstance(result, Applied):
            self.inflight = None
            self.applied_ok(inflight.records, inflight.plan, result, inflight.started)
            return None
        if isinstance(result, Stale) and not inflight.refused:
            inflight.refused = True
            self.metrics.stale_plans.inc()
        reseek = await self._redo(
            inflight.batch, inflight.records, inflight.started, inflight.gaps
        )
        self.inflight = None
        return reseek

    async def _redo(
        self,
        batch: Mapping[TP, list[ConsumerRecord]],
        records: list[Record],
        started: float,
        gaps: frozenset[str] = frozenset(),
    ) -> dict[TP, int] | None:
        """Apply a refused batch on the store's own offsets, one step at a time."""
        names = {self.name(tp): tp for tp in batch}
        for _attempt in range(_MAX_ATTEMPTS):
            fresh = await self.store.applied_offsets(names)
            went_back = [n for n, o in fresh.items() if o < self.confirmed.get(n, -1)]
            self.applied.update(fresh)
            if went_back:
                # The store lost writes we had applied (Redis restarted without its
                # last second): read those partitions again from what it still has.
                log.warning("store offsets went back for %s; re-reading", went_back)
                return {tp: fresh[n] + 1 for n, tp in names.items()}
            plan = self.store.plan(records, self.applied, gaps)
            if plan.empty:
                return None
            holes = self._holes(batch, plan)
            if holes:
                return holes
            result = await self._apply(plan)
            if isinstance(result, Applied):
                for name, (_before, last) in plan.offsets.items():
                    self.applied[name] = last
                self.applied_ok(records, plan, result, started)
                return None
            self.metrics.stale_plans.inc()
        log.warning("batch still stale after %d attempts; re-reading it", _MAX_ATTEMPTS)
        return {tp: self.applied.get(self.name(tp), -1) + 1 for tp in batch}

    def applied_ok(
        self, records: list[Record], plan: AnyPlan, result: Applied, started: float
    ) -> None:
        for name, (_before, last) in plan.offsets.items():
            self.confirmed[name] = last
        self.record(plan.rejected, plan.out_of_window, plan.max_ts_ms, result)
        self.count_inputs(plan)
        self.metrics.batch_records.observe(len(records))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        if self.after_apply is not None:
            self.after_apply()

    def record(
        self,
        rejected: Mapping[str, int],
        out_of_window: int,
        max_ts_ms: int,
        result: Applied,
    ) -> None:
        m = self.metrics
        for reason, n in rejected.items():
            m.rejected.labels(reason).inc(n)
        if out_of_window:
            m.out_of_window.inc(out_of_window)
        if result.duplicates:
            m.duplicates.inc(result.duplicates)
        if result.late:
            m.late.inc(result.late)
        for milestone in result.milestones:
            m.milestones.labels(milestone.kind).inc()
        self.latest_event_ms = max(self.latest_event_ms, max_ts_ms)
        if self.latest_event_ms:
            m.freshness.set(time.time() - self.latest_event_ms / 1000)
