"""Turn a batch of decoded records into a plan of deduplicated counter updates.

A plan is what one atomic store step applies: the Kafka offsets it covers, the
records grouped by brand and channel, each with the id that deduplicates it. The
store (Redis, or the in-memory `state` module) decides which ids are new.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from xxhash import xxh3_128_intdigest

from processors.events import CANCEL, CART, CHANNELS, CLICK, ORDER, Event, Rejection
from processors.milestones import Target, brand_targets
from processors.surge import (
    BRAND,
    CHANNEL,
    CLOCK_CHUNK_OFFSETS,
    FLASH_SALE_ORDERS,
    MINUTE_MS,
    ROOM,
    chunk_clock,
)

FIRST_HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000

# One letter per deduplication space: click and cart by event_id, order and cancel
# by order_id, each space separate (an order and its cancel share an order_id).
_SPACE: Final = {CLICK: b"c", CART: b"k", ORDER: b"o", CANCEL: b"x"}
CHANNEL_INDEX: Final = {name: i for i, name in enumerate(CHANNELS)}
LIVESTREAM: Final = CHANNEL_INDEX["livestream"]
FLASH_SALE: Final = CHANNEL_INDEX["flash_sale"]


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
    dedupe_shards: int = 1_024
    # Shards of the campaign's state (PRESALE_STATE_SHARDS): each in its own
    # Redis Cluster slot (streams/keys.py).
    state_shards: int = 1
    # Distinct regions a campaign keeps apart (PRESALE_MAX_REGIONS); a new one
    # past them counts under `other` (CONTRACT section 3).
    max_regions: int = 64
    # Last year's first hour per channel: (clicks, orders, gross fen), from
    # PRESALE_CHANNEL_BASELINE_CSV; read by the report only.
    channel_baselines: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def first_hour_end_ms(self) -> int:
        return self.start_ms + FIRST_HOUR_MS

    def targets(self, brand_id: str) -> tuple[Target, ...]:
        return brand_targets(
            self.thresholds_fen,
            self.baselines_fen.get(brand_id),
            self.yoy_min_baseline_fen,
        )


# The per-record parts of a plan are NamedTuples: as immutable and typed as
# frozen dataclasses, built in a fraction of the time (tens of thousands a batch).


class DedupeId(NamedTuple):
    """A 64-bit member in one of `dedupe_shards` sets (74 bits in all by default)."""

    shard: int
    member: str  # a signed 64-bit integer in decimal, so Redis stores it as intset


class Facet(NamedTuple):
    """One more place a counted event adds its counters to: the hash `key`
    (after the campaign prefix), fields `prefix + name`. A labelled facet
    (`label` >= 0, an index into Plan.labels) puts the label, as the store
    admits it under the campaign's cap, before the name: `<label>:<name>`.
    `names` limits the counters it takes (empty: all of them); `buyers`, when
    set, is the key prefix of a HyperLogLog of the order's user, with the label.

    The store knows nothing of regions, minutes or the first hour: the planner
    says where each event adds, so a later layout moves these hashes as data.
    """

    key: str
    prefix: str
    label: int = -1
    names: tuple[str, ...] = ()
    buyers: str = ""


# What each facet takes (processors/state.py and lua/apply.lua add the same
# counters to it as to the brand x channel hash).
FIRST_HOUR_NAMES: Final = ("clicks", "carts", "orders", "gross_gmv_fen")
MINUTE_NAMES: Final = ("clicks", "carts", "orders", "cancels", "gross_gmv_fen")
# Hash names of the facets (streams/store.py lists every key).
REGIONS_KEY: Final = "rg"
REGIONS_SET: Final = "rgs"
REGIONS_REFUSED: Final = "rgx"
REGION_BUYERS: Final = "u:rg:"
FIRST_HOUR_KEY: Final = "fhc"
MINUTES_KEY: Final = "mn"
OTHER_REGION: Final = "other"


def region_facet(label: int) -> Facet:
    """A region's counters and buyers, under its name as admitted."""
    return Facet(REGIONS_KEY, "", label, (), REGION_BUYERS)


def minute_facet(minute_ms: int) -> Facet:
    """The campaign's counters of one event-time minute (the GMV curve)."""
    return Facet(MINUTES_KEY, f"{minute_ms}:", -1, MINUTE_NAMES)


def first_hour_facet(channel: str) -> Facet:
    """A channel's first-hour counters (CONTRACT 3b)."""
    return Facet(FIRST_HOUR_KEY, channel + ":", -1, FIRST_HOUR_NAMES)


class Tally(NamedTuple):
    """Clicks or carts of one brand and channel in a batch, one id per event.

    The ids are parallel lists (shard, member, event time): flat lists cost a
    third of a list of tuples to build and to serialise, at 100k events/s that
    matters. The event time picks the id's dedupe generation and decides
    whether it is late (docs/exactly-once.md).
    """

    brand: int
    channel: int
    shards: list[int]
    members: list[str]
    ts_ms: list[int]
    # Each id's profile (Plan.profiles): the facets it adds to when fresh.
    profiles: Sequence[int] = ()

    @property
    def ids(self) -> list[DedupeId]:
        return [DedupeId(s, m) for s, m in zip(self.shards, self.members, strict=True)]


class OrderLine(NamedTuple):
    brand: int
    channel: int
    id: DedupeId
    amount_fen: int
    qty: int
    vip: bool
    user_id: str
    ts_ms: int
    first_hour: bool
    profile: int = 0
    # Its record's place in the batch (milestones merge the shards'
    # first-hour orders of a batch by it).
    at: int = 0


class PartitionClock(NamedTuple):
    """What one batch tells its partition's surge clock (processors/surge.py).

    Chunks of CLOCK_CHUNK_OFFSETS offsets wholly inside the batch are reduced
    here to the clock they give (`best`, 0 for none); the chunk the batch begins
    inside (the store may hold its earlier records) and the one it ends inside
    (not complete yet) go to the store as `pieces`, [(chunk, event times)],
    where `lua/apply.lua` completes them. `last` is the partition's last offset
    in the batch: the chunks it has passed are complete.
    """

    best: int
    last: int
    pieces: list[tuple[int, list[int]]]


def partition_clock(
    offsets: list[int], ts_ms: list[int], before: int, last: int
) -> PartitionClock:
    """The PartitionClock of one partition's counted records in a batch (in
    offset order, as Kafka hands them over), which applies offsets
    `before + 1 .. last`."""
    size = CLOCK_CHUNK_OFFSETS
    best = 0
    pieces = []
    i, n = 0, len(offsets)
    while i < n:  # chunk by chunk: a slice each, not a step per record
        chunk = offsets[i] // size
        j = bisect_left(offsets, (chunk + 1) * size, i)
        times = ts_ms[i:j]
        if chunk * size > before and (chunk + 1) * size - 1 <= last:
            best = max(best, chunk_clock(times))
        else:
            pieces.append((chunk, times))
        i = j
    return PartitionClock(best, last, pieces)


class CancelLine(NamedTuple):
    brand: int
    channel: int
    id: DedupeId
    amount_fen: int
    profile: int = 0


Record = tuple[str, int, "Event | Rejection"]  # ("topic:partition", offset, decoded)
Rejected = tuple[str, int, Rejection]  # a Record whose value was refused


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
    # Up to WATERMARK_SAMPLES of the batch's counted event times, at evenly
    # spaced quantiles: the store keeps the latest samples of all batches and
    # moves the watermark to their median, so one event, or a few percent of a
    # batch, with a clock days ahead cannot move it (docs/exactly-once.md).
    samples: list[int]
    # "topic:partition" -> what its records here tell its surge clock (every
    # partition the plan moves, with or without counted events): the judge's
    # clock is the slowest partition's (streams/alerts.py), so no minute is
    # judged before every partition is past it.
    highs: dict[str, PartitionClock]
    out_of_window: int
    # (topic short name, event type or "invalid") -> records the plan covers
    inputs: dict[tuple[str, str], int] = field(default_factory=dict)
    # Traffic per event-time minute and surge scope (processors/surge.py):
    # minute_ms -> {"scope|key": records}, the fields of the minute's Redis hash
    # (streams/alerts.py). Counted as delivered: a producer's duplicate is
    # traffic too (Kafka's redeliveries are not: offsets guard them).
    traffic: dict[int, dict[str, int]] = field(default_factory=dict)
    # The rejected records the plan covers, in order: their dead letters.
    rejections: list[Rejected] = field(default_factory=list)
    # The facets the batch's events add to, and per profile (one per
    # combination of region, minute, channel and first hour met in the batch)
    # the indexes of its facets: each id and line names its profile. The
    # capped labels (regions) the facets name, in order of first appearance:
    # the store admits a new one while the campaign holds fewer than
    # `label_cap`, else counts it under `other`.
    facets: list[Facet] = field(default_factory=list)
    profiles: list[tuple[int, ...]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    # Each label's first record's place in the batch (OrderLine.at): the
    # campaign decides labels met in several shards in this order.
    label_at: list[int] = field(default_factory=list)
    label_cap: int = 64

    @property
    def empty(self) -> bool:
        return not self.offsets

    @property
    def rejected(self) -> dict[str, int]:
        """Rejected records by reason."""
        return by_reason(self.rejections)


def by_reason(rejections: Iterable[Rejected]) -> dict[str, int]:
    """Rejected records by reason."""
    counts: dict[str, int] = {}
    for _tp, _offset, rejection in rejections:
        counts[rejection.reason] = counts.get(rejection.reason, 0) + 1
    return counts


# An id's 128-bit XXH3 hash: its low 64 bits, as a signed integer, are the
# member; the high 64 bits pick the shard.
_LOW64: Final = (1 << 64) - 1
_SIGN: Final = 1 << 63


def _dedupe(space: bytes, key: str, shards: int) -> tuple[int, str]:
    h = xxh3_128_intdigest(space + key.encode())
    return (h >> 64) % shards, str((h & _LOW64) - _SIGN)


def dedupe_id(kind: str, key: str, shards: int) -> DedupeId:
    """The id one event is deduplicated by, within its type's space."""
    shard, member = _dedupe(_SPACE[kind], key, shards)
    return DedupeId(shard, member)


# Watermark samples a batch gives at most, at quantiles (i + 0.5) / 16: with up
# to 3% of a batch ahead, none of them comes from the few that are ahead.
WATERMARK_SAMPLES: Final = 16


def watermark_samples(counted_ts: list[int]) -> list[int]:
    """Event times at evenly spaced quantiles of a sorted list (all of a short one)."""
    n = len(counted_ts)
    if n <= WATERMARK_SAMPLES:
        return list(counted_ts)
    return [
        counted_ts[(2 * i + 1) * n // (2 * WATERMARK_SAMPLES)]
        for i in range(WATERMARK_SAMPLES)
    ]


def plan_batch(
    records: Iterable[Record],
    rules: CampaignRules,
    applied: Mapping[str, int],
    gaps: Collection[str] = (),
    *,
    positions: Sequence[int] | None = None,
    spans: Mapping[str, tuple[int, int]] | None = None,
    highs: Mapping[str, PartitionClock] | None = None,
) -> Plan:
    """Group a batch of decoded records; records at or below `applied` are skipped.

    `applied` maps "topic:partition" to the last offset already in the store (-1 or
    absent when none). The plan carries, per partition, the offset it follows and
    the batch's last one, so the store refuses it if another worker moved on
    meanwhile. The offset it follows is the one before its first record: a plan
    that does not begin right after the store's offset (records fetched past a
    hole) is refused, never applied over the hole, except on the partitions in
    `gaps`, whose hole the caller has found to be Kafka's own (offsets of
    transaction markers, compacted or expired records).

    A shard's plan (`plan_shards`) is planned over the shard's records with
    their `positions` in the whole batch, the whole batch's `spans` and surge
    clocks (`highs`, for the partitions the shard keeps the clock of).
    """
    offsets: dict[str, tuple[int, int]] = {}  # "topic:partition" -> (first, last)
    brand_index: dict[str, int] = {}
    # brand << 4 | channel -> (shards, members, event times) of its clicks, carts
    click_ids: dict[int, tuple[list[int], list[str], list[int], list[int]]] = {}
    cart_ids: dict[int, tuple[list[int], list[str], list[int], list[int]]] = {}
    hash_id = xxh3_128_intdigest
    low64, sign = _LOW64, _SIGN
    orders: list[OrderLine] = []
    cancels: list[CancelLine] = []
    rejections: list[Rejected] = []
    out_of_window = 0
    # Rare paths, counted per topic and type for the records-in metric; the
    # common ones are counted from the plan's lists at the end.
    unusual: dict[tuple[str, str], int] = {}
    counted_ts: list[int] = []
    # "topic:partition" -> offsets and event times of its counted records
    points: dict[str, tuple[list[int], list[int]]] = {}
    point_offsets: list[int] = []
    point_ts: list[int] = []
    # (minute, brand index, channel index) -> click/cart/order records; rooms and
    # flash-sale orders apart (few): folded into surge scopes at the end.
    # An int key (minute index, brand, channel) hashes faster than a tuple;
    # brand indexes stay below 2^20 (a batch is far smaller).
    per_minute: dict[int, int] = {}
    rooms: dict[tuple[int, str], int] = {}
    flash: dict[tuple[int, int], int] = {}
    # (region, minute, first hour, channel) -> profile index
    profile_index: dict[tuple[str, int], int] = {}
    region_at: dict[str, int] = {}  # region -> its first record's place
    shards = rules.dedupe_shards
    start_ms, end_ms, hour_end_ms = (
        rules.start_ms,
        rules.end_ms,
        rules.first_hour_end_ms,
    )
    channel_index = CHANNEL_INDEX
    space = _SPACE
    last_tp = topic = ""
    before = last = first = -1
    place = -1
    for tp, offset, decoded in records:
        place += 1
        if tp != last_tp:  # records come in runs of one partition
            if last_tp and last > before:
                offsets[last_tp] = (first, last)
            point_offsets, point_ts = points.setdefault(tp, ([], []))
            last_tp = tp
            topic = tp.partition(":")[0]
            before = applied.get(tp, -1)
            first, last = offsets.get(tp, (1 << 62, -1))
        if offset <= before:
            continue
        if offset > last:
            last = offset
        if offset < first:
            first = offset
        if type(decoded) is Rejection:
            rejections.append((tp, offset, decoded))
            unusual[topic, "invalid"] = unusual.get((topic, "invalid"), 0) + 1
            continue
        assert type(decoded) is Event
        ts_ms = decoded.ts_ms
        if not start_ms <= ts_ms < end_ms:
            out_of_window += 1
            key = (topic, decoded.type)
            unusual[key] = unusual.get(key, 0) + 1
            continue
        counted_ts.append(ts_ms)
        point_offsets.append(offset)
        point_ts.append(ts_ms)
        brand = brand_index.get(decoded.brand_id)
        if brand is None:
            brand = brand_index[decoded.brand_id] = len(brand_index)
        channel = channel_index[decoded.channel]
        kind = decoded.type
        bc = brand << 4 | channel  # (brand, channel) as one int: a cheaper key
        minute = ts_ms // MINUTE_MS
        # (region, minute << 5 | first hour << 4 | channel): one lookup; past
        # the first hour the channel adds to no facet, so it is left out (a
        # batch then holds 7x fewer profiles)
        if ts_ms < hour_end_ms:
            pkey = (decoded.region, minute << 5 | 16 | channel)
        else:
            pkey = (decoded.region, minute << 5)
        profile = profile_index.get(pkey)
        if profile is None:
            profile = profile_index[pkey] = len(profile_index)
            if decoded.region not in region_at:
                region_at[decoded.region] = (
                    place if positions is None else positions[place]
                )
        if kind != CANCEL:
            cell = minute << 24 | bc
            per_minute[cell] = per_minute.get(cell, 0) + 1
            if channel == LIVESTREAM and decoded.room_id is not None:
                room = (ts_ms - ts_ms % MINUTE_MS, decoded.room_id)
                rooms[room] = rooms.get(room, 0) + 1
            if channel == FLASH_SALE and kind == ORDER:
                fl = (ts_ms - ts_ms % MINUTE_MS, brand)
                flash[fl] = flash.get(fl, 0) + 1
        if kind in (CLICK, CART):  # _dedupe(), inlined: 70% of records
            h = hash_id(space[kind] + decoded.event_id.encode())
            shard, member = (h >> 64) % shards, str((h & low64) - sign)
            by_bc = click_ids if kind == CLICK else cart_ids
            group = by_bc.get(bc)
            if group is None:
                by_bc[bc] = ([shard], [member], [ts_ms], [profile])
            else:
                group[0].append(shard)
                group[1].append(member)
                group[2].append(ts_ms)
                group[3].append(profile)
        elif kind == ORDER:
            assert decoded.order_id is not None
            orders.append(
                OrderLine(
                    brand,
                    channel,
                    DedupeId(*_dedupe(space[kind], decoded.order_id, shards)),
                    decoded.amount_fen,
                    decoded.qty,
                    decoded.vip,
                    decoded.user_id,
                    ts_ms,
                    ts_ms < hour_end_ms,
                    profile,
                    place if positions is None else positions[place],
                )
            )
        else:
            assert decoded.order_id is not None
            cancels.append(
                CancelLine(
                    brand,
                    channel,
                    DedupeId(*_dedupe(space[kind], decoded.order_id, shards)),
                    decoded.amount_fen,
                    profile,
                )
            )
    if last_tp and last > before:
        offsets[last_tp] = (first, last)
    if spans is None:
        spans = {
            tp: (applied.get(tp, -1) if tp in gaps else first - 1, last)
            for tp, (first, last) in offsets.items()
        }
    if highs is None:
        highs = {
            tp: partition_clock(*points.get(tp, ([], [])), span[0], span[1])
            for tp, span in spans.items()
        }
    brands = list(brand_index)
    first_hour_brands = {line.brand for line in orders if line.first_hour}
    targets = {b: rules.targets(brands[b]) for b in first_hour_brands}
    counted_ts.sort()
    clicks = [Tally(bc >> 4, bc & 0xF, *ids) for bc, ids in click_ids.items()]
    carts = [Tally(bc >> 4, bc & 0xF, *ids) for bc, ids in cart_ids.items()]
    facets, profiles, labels = _facets(profile_index)
    inputs = unusual
    for key, n in (
        (("clicks", CLICK), sum(len(t.shards) for t in clicks)),
        (("carts", CART), sum(len(t.shards) for t in carts)),
        (("orders", ORDER), len(orders)),
        (("orders", CANCEL), len(cancels)),
    ):
        if n:
            inputs[key] = inputs.get(key, 0) + n
    # Folded into each minute's fields: a brand's and a channel's per cell.
    traffic: dict[int, dict[str, int]] = {}
    brand_fields = [BRAND + "|" + b for b in brands]
    channel_fields = [CHANNEL + "|" + c for c in CHANNELS]
    minute_of_cell = -1
    cells: dict[str, int] = {}
    for cell, n in per_minute.items():  # mostly in runs of one minute
        if cell >> 24 != minute_of_cell:
            minute_of_cell = cell >> 24
            cells = traffic.setdefault(minute_of_cell * MINUTE_MS, {})
        brand_field = brand_fields[cell >> 4 & 0xFFFFF]
        cells[brand_field] = cells.get(brand_field, 0) + n
        channel_field = channel_fields[cell & 0xF]
        cells[channel_field] = cells.get(channel_field, 0) + n
    for (minute, room_id), n in rooms.items():
        traffic.setdefault(minute, {})[ROOM + "|" + room_id] = n
    for (minute, b), n in flash.items():
        traffic.setdefault(minute, {})[FLASH_SALE_ORDERS + "|" + brands[b]] = n
    return Plan(
        offsets=dict(spans),
        brands=brands,
        clicks=clicks,
        carts=carts,
        orders=orders,
        cancels=cancels,
        targets=targets,
        max_ts_ms=counted_ts[-1] if counted_ts else 0,
        samples=watermark_samples(counted_ts),
        highs=dict(highs),
        out_of_window=out_of_window,
        inputs=inputs,
        traffic=traffic,
        rejections=rejections,
        facets=facets,
        profiles=profiles,
        labels=labels,
        label_at=[region_at[label] for label in labels],
        label_cap=rules.max_regions,
    )


def _facets(
    profile_index: dict[tuple[str, int], int],
) -> tuple[list[Facet], list[tuple[int, ...]], list[str]]:
    """The facets of a batch's profiles, each once, each profile's, and the
    regions they name in order of first appearance. (A batch of 40,000 records
    holds about 8,000 profiles: each facet is built once, found by an int.)"""
    facets: list[Facet] = []
    by_region: dict[str, int] = {}
    by_minute: dict[int, int] = {}
    by_hour: dict[int, int] = {}
    labels: list[str] = []
    profiles: list[tuple[int, ...]] = []
    for region_id, rest in profile_index:  # in profile order
        region = by_region.get(region_id)
        if region is None:
            region = by_region[region_id] = len(facets)
            facets.append(region_facet(len(labels)))
            labels.append(region_id)
        minute = by_minute.get(rest >> 5)
        if minute is None:
            minute = by_minute[rest >> 5] = len(facets)
            facets.append(minute_facet((rest >> 5) * MINUTE_MS))
        if rest & 0x10:  # in the first hour
            hour = by_hour.get(rest & 0xF)
            if hour is None:
                hour = by_hour[rest & 0xF] = len(facets)
                facets.append(first_hour_facet(CHANNELS[rest & 0xF]))
            profiles.append((region, minute, hour))
        else:
            profiles.append((region, minute))
    return facets, profiles, labels


# The watermark is the median of the latest WATERMARK_RING samples of all
# batches (never moving back): a batch gives at most 16, so the median follows
# the last few batches, and a lone event at a quiet moment is one sample of 64.
# It moves only once WATERMARK_MIN_SAMPLES are in: a clock ahead in the
# campaign's first records is then one sample of 32 or more, never the median.
WATERMARK_RING: Final = 64
WATERMARK_MIN_SAMPLES: Final = 32


def watermark_from(ring: list[int], watermark_ms: int) -> int:
    """The watermark after a batch: the median of the latest samples, never lower."""
    if len(ring) < WATERMARK_MIN_SAMPLES:
        return watermark_ms
    ordered = sorted(ring)
    return max(watermark_ms, ordered[(len(ordered) - 1) // 2])


def dedupe_generation(ts_ms: int, horizon_ms: int) -> int:
    """The dedupe generation of a click or cart: its own event time / the horizon.

    Copies of one event carry its event time, so they meet in one generation.
    A generation is dropped once it is wholly more than a horizon behind the
    watermark (`generation_kept`): by then every event it holds is late, and a
    late event is never looked up. Orders and cancels have no generation: their
    ids are kept for the campaign's life.
    """
    return ts_ms // horizon_ms


def is_late(ts_ms: int, watermark_ms: int, horizon_ms: int) -> bool:
    """A click or cart more than the horizon behind the watermark is late."""
    return ts_ms < watermark_ms - horizon_ms


def oldest_generation(watermark_ms: int, horizon_ms: int) -> int:
    """The oldest click and cart generation still needed: that of the watermark
    less the horizon (the earliest event time that is not late)."""
    return max(watermark_ms - horizon_ms, 0) // horizon_ms


def home_shard(partition: str, shards: int) -> int:
    """The state shard that keeps a partition's surge clock ("topic:partition")."""
    return zlib.crc32(partition.encode()) % shards


def record_shard(decoded: Event | Rejection, offset: int, rules: CampaignRules) -> int:
    """The state shard a record is counted in: that of its dedupe id (a dedupe
    set lives in shard `set % state_shards`), so every copy of an event, on
    any partition, meets its id in one shard. A rejected record, which has no
    id, goes by its offset."""
    shards = rules.state_shards
    if type(decoded) is Rejection:
        return offset % shards
    assert type(decoded) is Event
    key = decoded.event_id if decoded.type in (CLICK, CART) else decoded.order_id
    assert key is not None
    h = xxh3_128_intdigest(_SPACE[decoded.type] + key.encode())
    return (h >> 64) % rules.dedupe_shards % shards


@dataclass(frozen=True, slots=True)
class ShardedPlan:
    """A batch's plans, one per state shard, None where the shard applied the
    batch's offsets already (a worker died between the shards' steps). Seen
    from the pipeline it is one plan: `offsets` are the campaign's (a
    partition's lowest offset over the shards), the rest sums of the parts."""

    parts: list[Plan | None]
    offsets: dict[str, tuple[int, int]]
    rejections: list[Rejected]
    out_of_window: int
    max_ts_ms: int
    inputs: dict[tuple[str, str], int]
    # The whole batch's watermark samples: with several shards the campaign
    # keeps one watermark (streams/lua/fold.lua), which every shard's step gets.
    samples: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.offsets

    @property
    def rejected(self) -> dict[str, int]:
        """Rejected records by reason."""
        return by_reason(self.rejections)


def plan_shards(
    records: Sequence[Record],
    rules: CampaignRules,
    applied: Sequence[Mapping[str, int]],
    gaps: Collection[str] = (),
) -> ShardedPlan:
    """Plan a batch for each of `rules.state_shards` shards, each on its own
    applied offsets (`applied[shard]`, "topic:partition" -> last offset).

    Every shard's plan moves every partition of the batch (its offsets guard
    what it counts of each), so in the normal course the shards' offsets move
    together; after a worker died between two shards' steps, the shards ahead
    skip the records they hold already. Each record is counted in the shard
    of its dedupe id (`record_shard`); a partition's surge clock is kept by
    its home shard (`home_shard`).
    """
    shards = rules.state_shards
    offsets_of: dict[str, list[int]] = {}
    subsets: list[list[Record]] = [[] for _ in range(shards)]
    places: list[list[int]] = [[] for _ in range(shards)]
    for place, record in enumerate(records):
        tp, offset, decoded = record
        found = offsets_of.get(tp)
        if found is None:
            found = offsets_of[tp] = []
        found.append(offset)
        shard = record_shard(decoded, offset, rules)
        subsets[shard].append(record)
        places[shard].append(place)
    for offs in offsets_of.values():
        offs.sort()  # already in order from Kafka: a pass
    spans: list[dict[str, tuple[int, int]]] = []
    for s in range(shards):
        mine: dict[str, tuple[int, int]] = {}
        for tp, offs in offsets_of.items():
            done = applied[s].get(tp, -1)
            if offs[-1] <= done:
                continue
            first = offs[bisect_left(offs, done + 1)]
            mine[tp] = (done if tp in gaps else first - 1, offs[-1])
        spans.append(mine)
    # Each partition's surge clock, from its counted records past its home
    # shard's offset.
    start_ms, end_ms = rules.start_ms, rules.end_ms
    clocks: dict[str, PartitionClock] = {}
    points: dict[str, tuple[list[int], list[int]]] = {}
    lowest = {tp: min(a.get(tp, -1) for a in applied) for tp in offsets_of}
    counted: list[int] = []
    for tp, offset, decoded in records:
        if type(decoded) is Event and start_ms <= decoded.ts_ms < end_ms:
            if offset > lowest[tp]:
                counted.append(decoded.ts_ms)
            home = home_shard(tp, shards)
            if offset > applied[home].get(tp, -1):
                offs, times = points.setdefault(tp, ([], []))
                offs.append(offset)
                times.append(decoded.ts_ms)
    for tp in offsets_of:
        span = spans[home_shard(tp, shards)].get(tp)
        if span is not None:
            clocks[tp] = partition_clock(*points.get(tp, ([], [])), *span)
    parts: list[Plan | None] = []
    for s in range(shards):
        if not spans[s]:
            parts.append(None)
            continue
        highs = {tp: c for tp, c in clocks.items() if home_shard(tp, shards) == s}
        parts.append(
            plan_batch(
                subsets[s],
                rules,
                applied[s],
                gaps,
                positions=places[s],
                spans=spans[s],
                highs=highs,
            )
        )
    offsets: dict[str, tuple[int, int]] = {}
    for mine in spans:
        for tp, (before, last) in mine.items():
            had = offsets.get(tp)
            offsets[tp] = (before, last) if had is None else (min(had[0], before), last)
    rejections: list[Rejected] = []
    inputs: dict[tuple[str, str], int] = {}
    for part in parts:
        if part is not None:
            rejections.extend(part.rejections)
            for key, n in part.inputs.items():
                inputs[key] = inputs.get(key, 0) + n
    return ShardedPlan(
        parts=parts,
        offsets=offsets,
        rejections=rejections,
        out_of_window=sum(p.out_of_window for p in parts if p is not None),
        max_ts_ms=max((p.max_ts_ms for p in parts if p is not None), default=0),
        inputs=inputs,
        samples=watermark_samples(sorted(counted)),
    )
