"""Turn a batch of decoded records into a plan of deduplicated counter updates.

A plan is what one atomic store step applies: the Kafka offsets it covers, the
records grouped by brand and channel, each with the id that deduplicates it. The
store (Redis, or the in-memory `state` module) decides which ids are new.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from processors.events import CANCEL, CART, CHANNELS, CLICK, ORDER, Event, Rejection
from processors.milestones import Target, brand_targets

FIRST_HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000

# One letter per deduplication space: click and cart by event_id, order and cancel
# by order_id, each space separate (an order and its cancel share an order_id).
_SPACE: Final = {CLICK: b"c", CART: b"k", ORDER: b"o", CANCEL: b"x"}
CHANNEL_INDEX: Final = {name: i for i, name in enumerate(CHANNELS)}


@dataclass(frozen=True, slots=True)
class CampaignRules:
    """What is counted: the campaign window, milestone targets and dedupe sizing."""

    campaign_id: str
    start_ms: int
    end_ms: int
    thresholds_fen: tuple[int, ...] = (1_000_000_000, 10_000_000_000)
    baselines_fen: Mapping[str, int] = field(default_factory=dict)
    yoy_min_baseline_fen: int = 1_000_000
    dedupe_horizon_ms: int = DAY_MS
    dedupe_shards: int = 16_384

    @property
    def first_hour_end_ms(self) -> int:
        return self.start_ms + FIRST_HOUR_MS

    def targets(self, brand_id: str) -> tuple[Target, ...]:
        return brand_targets(
            self.thresholds_fen,
            self.baselines_fen.get(brand_id),
            self.yoy_min_baseline_fen,
        )


@dataclass(frozen=True, slots=True)
class DedupeId:
    """A 64-bit member in one of `dedupe_shards` sets (about 78 bits in all)."""

    shard: int
    member: str  # a signed 64-bit integer in decimal, so Redis stores it as intset


@dataclass(frozen=True, slots=True)
class Tally:
    """Clicks or carts of one brand and channel in a batch, one id per event."""

    brand: int
    channel: int
    ids: list[DedupeId]


@dataclass(frozen=True, slots=True)
class OrderLine:
    brand: int
    channel: int
    id: DedupeId
    amount_fen: int
    qty: int
    vip: bool
    user_id: str
    ts_ms: int
    first_hour: bool


@dataclass(frozen=True, slots=True)
class CancelLine:
    brand: int
    channel: int
    id: DedupeId
    amount_fen: int


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one atomic store step applies for a batch."""

    offsets: dict[str, tuple[int, int]]  # "topic:partition" -> (applied before, last)
    brands: list[str]
    clicks: list[Tally]
    carts: list[Tally]
    orders: list[OrderLine]
    cancels: list[CancelLine]
    targets: dict[int, tuple[Target, ...]]  # brand index -> its targets (first hour)
    max_ts_ms: int  # latest event time of the counted events, 0 if none
    # The batch's median counted event time, 0 if none: it moves the dedupe
    # watermark, so one event with a far-future ts cannot make the store forget.
    clock_ms: int
    out_of_window: int
    rejected: dict[str, int]  # reason -> records

    @property
    def empty(self) -> bool:
        return not self.offsets


def dedupe_id(kind: str, key: str, shards: int) -> DedupeId:
    digest = hashlib.blake2b(_SPACE[kind] + key.encode(), digest_size=12).digest()
    member = int.from_bytes(digest[:8], "little", signed=True)
    return DedupeId(int.from_bytes(digest[8:], "little") % shards, str(member))


Record = tuple[str, int, "Event | Rejection"]  # ("topic:partition", offset, decoded)


def plan_batch(
    records: Iterable[Record],
    rules: CampaignRules,
    applied: Mapping[str, int],
) -> Plan:
    """Group a batch of decoded records; records at or below `applied` are skipped.

    `applied` maps "topic:partition" to the last offset already in the store (-1 or
    absent when none). The plan carries, per partition, that offset and the batch's
    last one, so the store can refuse it if another worker moved on meanwhile.
    """
    offsets: dict[str, tuple[int, int]] = {}
    brand_index: dict[str, int] = {}
    tallies: dict[tuple[str, int, int], list[DedupeId]] = {}
    orders: list[OrderLine] = []
    cancels: list[CancelLine] = []
    rejected: dict[str, int] = {}
    out_of_window = 0
    max_ts_ms = 0
    counted_ts: list[int] = []
    shards = rules.dedupe_shards
    start_ms, end_ms, hour_end_ms = (
        rules.start_ms,
        rules.end_ms,
        rules.first_hour_end_ms,
    )
    for tp, offset, decoded in records:
        before = applied.get(tp, -1)
        if offset <= before:
            continue
        span = offsets.get(tp)
        offsets[tp] = (
            (before, offset) if span is None else (span[0], max(span[1], offset))
        )
        if type(decoded) is Rejection:
            rejected[decoded.reason] = rejected.get(decoded.reason, 0) + 1
            continue
        assert type(decoded) is Event
        ts_ms = decoded.ts_ms
        if not start_ms <= ts_ms < end_ms:
            out_of_window += 1
            continue
        max_ts_ms = max(max_ts_ms, ts_ms)
        counted_ts.append(ts_ms)
        brand = brand_index.setdefault(decoded.brand_id, len(brand_index))
        channel = CHANNEL_INDEX[decoded.channel]
        kind = decoded.type
        if kind in (CLICK, CART):
            ident = dedupe_id(kind, decoded.event_id, shards)
            tallies.setdefault((kind, brand, channel), []).append(ident)
        elif kind == ORDER:
            assert decoded.order_id is not None
            orders.append(
                OrderLine(
                    brand,
                    channel,
                    dedupe_id(kind, decoded.order_id, shards),
                    decoded.amount_fen,
                    decoded.qty,
                    decoded.vip,
                    decoded.user_id,
                    ts_ms,
                    ts_ms < hour_end_ms,
                )
            )
        else:
            assert decoded.order_id is not None
            cancels.append(
                CancelLine(
                    brand,
                    channel,
                    dedupe_id(kind, decoded.order_id, shards),
                    decoded.amount_fen,
                )
            )
    brands = list(brand_index)
    targets = {
        line.brand: rules.targets(brands[line.brand])
        for line in orders
        if line.first_hour
    }
    return Plan(
        offsets=offsets,
        brands=brands,
        clicks=[Tally(b, c, ids) for (k, b, c), ids in tallies.items() if k == CLICK],
        carts=[Tally(b, c, ids) for (k, b, c), ids in tallies.items() if k == CART],
        orders=orders,
        cancels=cancels,
        targets=targets,
        max_ts_ms=max_ts_ms,
        clock_ms=sorted(counted_ts)[len(counted_ts) // 2] if counted_ts else 0,
        out_of_window=out_of_window,
        rejected=rejected,
    )


def dedupe_generation(watermark_ms: int, horizon_ms: int) -> int:
    """The dedupe generation new ids go to; ids are looked up in it and the one before.

    So an id is remembered for at least one horizon of watermark progress, and at
    most two, and memory stays bounded. The watermark is the highest batch median
    of counted event times: outliers in a batch do not move it.
    """
    return watermark_ms // horizon_ms
