"""Where the campaign state lives: one Protocol, a Redis store and an in-memory one."""

from __future__ import annotations

import asyncio
import heapq
import logging
import uuid
from collections.abc import Awaitable, Collection, Iterable, Mapping
from importlib import resources
from itertools import chain
from typing import Any, Final, NamedTuple, Protocol

import orjson
import redis.asyncio as aioredis
from msgspec.msgpack import encode as msgpack_encode
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import (
    AuthenticationError,
    NoScriptError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from processors.counting import (
    FIRST_HOUR_KEY,
    MINUTES_KEY,
    OTHER_REGION,
    REGION_BUYERS,
    REGIONS_KEY,
    REGIONS_REFUSED,
    REGIONS_SET,
    WATERMARK_RING,
    CampaignRules,
    Plan,
    Record,
    ShardedPlan,
    plan_batch,
    plan_shards,
    watermark_from,
)
from processors.events import CHANNELS
from processors.milestones import Milestone
from processors.state import COUNTERS, Applied, CampaignState, Stale, apply_plan
from processors.surge import CLOCK_CHUNK_OFFSETS, CLOCK_MIN_EVENTS
from streams.connect import guard, redis_client
from streams.errors import RedisUnavailable, RulesMismatch
from streams.keys import Layout
from streams.report import (
    DEFAULT_MINUTES,
    BrandRow,
    latest_minutes,
    shape_report,
    split_labelled,
)
from streams.settings import Settings

log = logging.getLogger(__name__)


def _script(name: str) -> str:
    """A Lua script of the store, after the helpers they share (lua/common.lua)."""
    lua = resources.files("streams").joinpath("lua")
    return lua.joinpath("common.lua").read_text() + lua.joinpath(name).read_text()


APPLY_LUA: Final = _script("apply.lua")
FOLD_LUA: Final = _script("fold.lua")
# Folded aggregates a shard keeps in its stream: if the campaign's slot loses
# its last writes (a master restarted from an AOF written every second), the
# fold finds them there again.
FOLD_KEEP: Final = 64
# A plan, as the pipeline sees it: one store step (one shard) or a sharded one.
AnyPlan = Plan | ShardedPlan
# A minute's traffic counts are kept two hours after they were last written:
# the surge judge needs the last dozen minutes only (docs/alerts.md).
TRAFFIC_TTL_MS: Final = 7_200_000
# Ids a dedupe generation should hold in compact intsets (about 8 bytes an id):
# PRESALE_DEDUPE_SHARDS x Redis's set-max-intset-entries, 1,024 x 8,192 by default.
COMPACT_IDS: Final = 8_000_000
# What Redis's MATCH treats as pattern syntax (util.c stringmatchlen) plus braces.
GLOB_CHARS: Final = frozenset("*?[]\\^-{}")
# Doubles hold every integer below 2^53 exactly: the rank's scores (sums of
# integer fen) are exact below it.
EXACT_SCORE: Final = 2.0**53
# Past EXACT_SCORE, how many brands near the cut a top-N report reads beyond N.
NEAR_TIES: Final = 1_000
# A buyers key (`u:bc:`, `u:ch:`, `u:rg:`) is a set of user ids, counted
# exactly, while it holds at most this many; past it, a HyperLogLog of them
# (lua/apply.lua). Why 1,000: docs/counting.md, "Buyers".
BUYERS_EXACT: Final = 1_000


def intset_advice(limit: int | None, shards: int) -> str | None:
    """A warning when the dedupe sets would leave Redis's compact intsets early."""
    if limit is None or limit * shards >= COMPACT_IDS:
        return None
    enough = 1 << (-(-COMPACT_IDS // shards) - 1).bit_length()  # a power of two
    return (
        f"Redis keeps sets compact up to {limit:,} integers (set-max-intset-entries):"
        f" with PRESALE_DEDUPE_SHARDS={shards} the dedupe sets take about 5x the"
        f" memory past {limit * shards:,} ids a generation; set"
        f" set-max-intset-entries to {enough} or more"
    )


def glob_escape(text: str) -> str:
    """`text` as a Redis MATCH pattern that matches only itself: every glob
    character (`*`, `?`, `[`, `]`, `\\`, and the braces for good measure)
    escaped, so campaign `d11*` never matches `d11-2025`'s keys."""
    return "".join("\\" + char if char in GLOB_CHARS else char for char in text)


class Store(Protocol):
    """What the worker and the report need from the campaign state."""

    async def applied_offsets(self, partitions: Iterable[str]) -> dict[str, int]:
        """The last applied offset of each "topic:partition" (-1 when none)."""
        ...

    def plan(
        self,
        records: list[Record],
        applied: Mapping[str, int],
        gaps: Collection[str] = (),
    ) -> AnyPlan:
        """Plan a batch for this store's layout (`plan_batch`, or one plan per
        state shard), on the offsets applied."""
        ...

    async def apply(self, plan: AnyPlan, now_ms: int) -> Applied | Stale:
        """Apply one plan atomically with its offsets, or refuse it as stale."""
        ...

    async def send(self, plan: AnyPlan, now_ms: int) -> Awaitable[Applied | Stale]:
        """Start `apply`: returns, once the step is sent, what waits for it."""
        ...

    async def report(
        self, top: int | None = None, minutes: int = DEFAULT_MINUTES
    ) -> dict[str, Any]:
        """The CONTRACT section 7 object, without consumer_lag."""
        ...

    async def reset(self) -> int:
        """Delete the campaign's state; returns how many keys went."""
        ...


def encode_plan(
    plan: Plan,
    rules: CampaignRules,
    labels: list[str] | None = None,
    pending: list[int] | None = None,
    folded: int = 0,
    watermark: int | None = None,
) -> bytes:
    """The plan in the compact MessagePack shape `lua/apply.lua` reads
    (Redis's `cmsgpack` unpacks it in about 70% of the time `cjson` takes for
    the same plan as JSON, docs/performance.md): `labels` are
    the plan's regions as decided (`plan.labels` when not given), `pending`
    1 for each not decided yet, `folded` the shard's last aggregate folded
    as the worker last saw (its stream keeps FOLD_KEEP before it),
    `watermark` the campaign's when it keeps several shards."""
    click_groups, order_groups = _dedupe_groups(plan, rules.dedupe_horizon_ms)
    extra = {} if watermark is None else {"w": watermark}
    return msgpack_encode(
        {
            **extra,
            "o": [[tp, before, last] for tp, (before, last) in plan.offsets.items()],
            "b": plan.brands,
            "n": CHANNELS,
            "c": [[t.brand, t.channel, len(t.shards)] for t in plan.clicks],
            "k": [[t.brand, t.channel, len(t.shards)] for t in plan.carts],
            "r": [
                [
                    o.brand,
                    o.channel,
                    o.amount_fen,
                    o.qty,
                    int(o.vip),
                    o.user_id,
                    o.ts_ms,
                    int(o.first_hour),
                    o.profile,
                    o.at,
                ]
                for o in plan.orders
            ],
            "x": [[x.brand, x.channel, x.amount_fen, x.profile] for x in plan.cancels],
            # Facets (processors/counting.py:Facet): [key, prefix, label, names,
            # buyers] each; each profile's facet indexes; the labels as admitted.
            "gf": [list(f) for f in plan.facets],
            "g": plan.profiles,
            "lb": plan.labels if labels is None else labels,
            "lp": [0] * len(plan.labels) if pending is None else pending,
            "la": plan.label_at,
            "ft": folded,
            "fk": FOLD_KEEP,
            "dc": click_groups,
            "dr": order_groups,
            "ws": plan.samples,
            "h": rules.dedupe_horizon_ms,
            "s": rules.dedupe_shards,
            "m": _traffic_by_minute(plan),
            "mt": TRAFFIC_TTL_MS,
            # The surge clock: per partition [best, last, [[chunk, [ts...]]...]]
            # (processors/counting.py:PartitionClock); an object even when empty.
            "pc": {tp: list(c) for tp, c in plan.highs.items()} or {"": 0},
            "ck": [CLOCK_CHUNK_OFFSETS, CLOCK_MIN_EVENTS],
            "ow": plan.out_of_window,
            "dl": plan.rejected,
            "rm": _rooms(plan),
            "be": BUYERS_EXACT,
        }
    )


def _rooms(plan: Plan) -> list[str]:
    """The batch's livestream rooms, from its traffic cells (`room|<id>`), for
    the campaign's HyperLogLog of rooms (the `presale_distinct_ids` metric)."""
    return list(
        {c[5:] for cells in plan.traffic.values() for c in cells if c[:5] == "room|"}
    )


ClickGroup = tuple[int, int, list[str], list[int], list[int], list[int], list[int]]
OrderGroup = tuple[int, list[str], list[int]]


def _dedupe_groups(
    plan: Plan, horizon_ms: int
) -> tuple[list[ClickGroup], list[OrderGroup]]:
    """The plan's ids by dedupe set for `lua/apply.lua`.

    Each id once, at its first occurrence in the batch (a later one is a
    duplicate whatever Redis says, or late with it), with its owner: the index
    of its tally or line, counting clicks, carts, orders and cancels in turn.
    Clicks and carts: [generation, shard, ids, owners, event times, repeats,
    profiles], the generation that of the event time, repeats a flat list of
    (index in the group, copies) for ids met again in the batch, profiles
    each id's (Plan.profiles: where a fresh one adds). Orders and cancels:
    [shard, ids, owners]. Grouped here, so the atomic step, which holds Redis,
    does the least per id.
    """
    clicks: dict[tuple[int, int], ClickGroup] = {}
    where: dict[str, tuple[ClickGroup, int]] = {}
    get, find = clicks.get, where.get
    owner = 0
    for tally in chain(plan.clicks, plan.carts):
        for shard, member, ts_ms, profile in zip(
            tally.shards, tally.members, tally.ts_ms, tally.profiles, strict=True
        ):
            met = find(member)
            if met is not None:
                met[0][5].extend((met[1], 1))
                continue
            key = (ts_ms // horizon_ms, shard)
            group = get(key)
            if group is None:
                group = clicks[key] = (key[0], shard, [], [], [], [], [])
            where[member] = (group, len(group[2]))
            group[2].append(member)
            group[3].append(owner)
            group[4].append(ts_ms)
            group[6].append(profile)
        owner += 1
    orders: dict[int, OrderGroup] = {}
    seen: set[str] = set()
    for ident in chain((o.id for o in plan.orders), (x.id for x in plan.cancels)):
        shard, member = ident
        if member not in seen:
            seen.add(member)
            group_o = orders.get(shard)
            if group_o is None:
                orders[shard] = (shard, [member], [owner])
            else:
                group_o[1].append(member)
                group_o[2].append(owner)
        owner += 1
    return list(clicks.values()), list(orders.values())


def step_keys(plan: Plan, rules: CampaignRules, prefix: str) -> list[str]:
    """Every key the step may touch, declared to a Redis Cluster with the step
    (the offsets hash first): a slot on the move then answers TRYAGAIN or ASK
    for the whole step, before it runs, instead of the node that imports the
    slot running it over the keys it does not hold yet. (Generations the step
    drops are found in Redis; a key of theirs left behind by a migration holds
    only late ids.)"""
    p = prefix
    keys = [
        p + name
        for name in (
            "off", "meta", "dl", "wm", "dd:gens", "agg", "sm:idx", "clock",
            "clock:part", "ch", REGIONS_KEY, REGIONS_KEY + "p", FIRST_HOUR_KEY,
            MINUTES_KEY,
        )
    ]  # fmt: skip
    keys.extend(p + "bc:" + b for b in plan.brands)
    keys.extend(p + f"sm:{minute}" for minute in plan.traffic)
    horizon = rules.dedupe_horizon_ms
    sets = {
        f"dd:{ts // horizon}:{shard}"
        for tally in chain(plan.clicks, plan.carts)
        for shard, ts in zip(tally.shards, tally.ts_ms, strict=True)
    }
    sets.update(f"dd:o:{line.id.shard}" for line in plan.orders)
    sets.update(f"dd:o:{line.id.shard}" for line in plan.cancels)
    buyers = {(o.brand, o.channel) for o in plan.orders}
    sets.update(f"u:bc:{plan.brands[b]}:{CHANNELS[c]}" for b, c in buyers)
    sets.update(f"u:ch:{CHANNELS[c]}" for _b, c in buyers)
    if plan.orders:  # the buyers of every region the step may count under
        sets.update(REGION_BUYERS + r for r in (*plan.labels, OTHER_REGION))
    keys.extend(p + k for k in sorted(sets))
    return keys


def _traffic_by_minute(plan: Plan) -> dict[str, tuple[list[str], list[int]]]:
    """The plan's traffic as minute -> (["scope|key", ...], [records, ...])."""
    return {
        str(minute): (list(cells), list(cells.values()))
        for minute, cells in plan.traffic.items()
    }


# What Redis Cluster answers a script that touches a key of a slot this node
# no longer serves (a slot migrated mid-step) or while the cluster is down: the
# step wrote nothing (lua/apply.lua reads every key before its first write), so
# it is tried again, like a MOVED or ASK redirection.
_RETRY_STEP: Final = ("non local key", "cluster is down")


def _transient(exc: ResponseError) -> ResponseError:
    """A step's error, as TryAgainError when it passes (a slot on the move)."""
    text = str(exc)
    if any(marker in text for marker in _RETRY_STEP):
        return TryAgainError(text)
    return exc


class _Step(NamedTuple):
    """What one shard's `lua/apply.lua` answered: its counts, and the batch
    aggregate it appended for the fold (seq 0: none)."""

    new_events: int
    duplicates: int
    late: int
    seq: int
    aggregate: bytes


def _step_outcome(result: list[Any]) -> _Step | Stale:
    if result[0] == b"stale":
        return Stale(result[1].decode(), int(result[2]))
    return _Step(
        int(result[1]), int(result[2]), int(result[3]), int(result[4]), result[5]
    )


def regions_view(
    counted: Mapping[str, int], pending: Mapping[str, int], admitted: set[str]
) -> tuple[dict[str, dict[str, int]], dict[str, list[str]]]:
    """Regions' counters: those counted under their decision, plus those
    counted while not decided yet (`rgp`) under the decision since taken
    (admitted: their own name; else `other`); and, per region shown, the
    names its buyers' HyperLogLogs were kept under."""
    regions = split_labelled(counted)
    names = {region: [region] for region in regions}
    for label, counters in split_labelled(pending).items():
        region = label if label in admitted else OTHER_REGION
        into = regions.setdefault(region, {})
        for name, value in counters.items():
            into[name] = into.get(name, 0) + value
        kept = names.setdefault(region, [])
        if label not in kept:
            kept.append(label)
    return regions, names


async def sum_shard_hashes(
    client: Any, shards: Iterable[str], names: list[str]
) -> list[dict[str, int]]:
    """Each hash of `names` summed field by field over the shards' prefixes."""
    prefixes = list(shards)
    async with client.pipeline(transaction=False) as pipe:
        for name in names:
            for p in prefixes:
                pipe.hgetall(p + name)
        raw = await pipe.execute()
    out = []
    n = len(prefixes)
    for i in range(len(names)):
        total: dict[str, int] = {}
        for part in raw[i * n : (i + 1) * n]:
            for k, v in part.items():
                field = k.decode()
                total[field] = total.get(field, 0) + int(v)
        out.append(total)
    return out


def _int_map(raw: Mapping[bytes, bytes]) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in raw.items()}


def decode_alerts(entries: list[Any]) -> list[dict[str, Any]]:
    """The alerts stream's records; an entry that is not a JSON object (only
    a hand-written one could be) is skipped."""
    alerts = []
    for _id, fields in entries:
        try:
            alert = orjson.loads(fields.get(b"value", b""))
        except orjson.JSONDecodeError:
            continue
        if isinstance(alert, dict):
            alerts.append(alert)
    return alerts


def _split_channels(raw: Mapping[str, int]) -> dict[str, dict[str, int]]:
    by_channel: dict[str, dict[str, int]] = {}
    for name, value in raw.items():
        channel, _, counter = name.partition(":")
        by_channel.setdefault(channel, dict.fromkeys(COUNTERS, 0))[counter] = value
    return by_channel


class RedisStore:
    """The campaign state in Redis; every key starts with the campaign's prefix."""

    def __init__(
        self, client: aioredis.Redis, prefix: str, rules: CampaignRules
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.rules = rules
        self.layout = Layout(prefix, rules.state_shards)
        self.shards = self.layout.shard
        self.cluster = isinstance(client, RedisCluster)
        # On one Redis the fold reads the shards' streams to check each
        # aggregate it is given (lua/fold.lua); on a cluster it cannot.
        self._fold_shards = b"" if self.cluster else orjson.dumps(self.shards)
        # Each shard's offsets as last read or moved by this store's steps.
        self.shard_applied: list[dict[str, int]] = [{} for _ in self.shards]
        # Each shard's last aggregate known folded (its stream is trimmed to it).
        self.folded: dict[int, int] = {}
        # Regions admitted under the cap, and whether the cap was reached.
        self.admitted: set[str] = set()
        self.refused: set[str] = set()
        self.regions_full = False
        # Several shards: the campaign's latest watermark samples and watermark,
        # as the last fold answered (None: not read yet).
        self.ring: list[int] | None = None
        self.watermark = 0
        self._apply = client.register_script(APPLY_LUA)
        self._fold = client.register_script(FOLD_LUA)

    @classmethod
    def from_url(cls, url: str, prefix: str, rules: CampaignRules) -> RedisStore:
        client = aioredis.Redis.from_url(
            url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30
        )
        return cls(guard(client), prefix, rules)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisStore:
        """One Redis server or a Redis Cluster, with AUTH and TLS as configured."""
        client: Any = redis_client(settings)
        return cls(client, settings.redis_prefix, settings.rules)

    async def intset_limit(self) -> int | None:
        """Redis's `set-max-intset-entries`; None where CONFIG is refused (many
        managed services disable it) or answers in no shape we know."""
        try:
            raw = await self.client.config_get("set-max-intset-entries")
        except (ResponseError, RedisClusterException):
            return None
        value = raw.get("set-max-intset-entries") if isinstance(raw, dict) else None
        if isinstance(value, bytes):
            value = value.decode()
        return int(value) if isinstance(value, str) and value.isdigit() else None

    async def ping(self) -> None:
        """Fail with one readable line when Redis does not answer."""
        try:
            await self.client.ping()
        except AuthenticationError as exc:
            msg = f"Redis refused our credentials: {exc}"
            raise RedisUnavailable(msg) from exc
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            msg = f"cannot reach Redis: {exc}"
            raise RedisUnavailable(msg) from exc
        except ResponseError as exc:
            msg = f"Redis refused the connection: {exc}"
            raise RedisUnavailable(msg) from exc
        except RedisClusterException as exc:  # no node answered, or not a cluster
            msg = f"cannot use the Redis Cluster: {exc}"
            raise RedisUnavailable(msg) from exc

    async def close(self) -> None:
        await self.client.aclose()

    async def pin_rules(self, rules: Mapping[str, str]) -> None:
        """Store the campaign's rules at its first start; refuse, with one line,
        rules that differ from those stored (a rule the stored ones lack, from a
        newer version, is added)."""
        key = self.prefix + "rules"
        async with self.client.pipeline(transaction=True) as pipe:
            for name, value in rules.items():
                pipe.hsetnx(key, name, value)
            pipe.hgetall(key)
            *_added, stored_raw = await pipe.execute()
        stored = {k.decode(): v.decode() for k, v in stored_raw.items()}
        differ = [n for n, v in rules.items() if stored.get(n, v) != v]
        if differ:
            name = differ[0]
            msg = (
                f"{name} is {rules[name]!r} here, but campaign"
                f" {self.rules.campaign_id!r} was started with {stored[name]!r}"
                f" ({len(differ)} rule(s) differ): every worker of a campaign"
                " must count by the same rules; start this worker with the"
                " campaign's settings, or clear the campaign with `presale reset`"
            )
            raise RulesMismatch(msg)

    async def applied_offsets(self, partitions: Iterable[str]) -> dict[str, int]:
        """Each partition's offset the campaign applied through: the lowest of
        its shards' (a worker that died between two shards' steps leaves some
        ahead; `plan` then skips, in those, what they hold)."""
        names = list(partitions)
        if not names:
            return {}
        if len(self.shards) == 1:
            rows = [await self.client.hmget(self.prefix + "off", names)]
        else:
            async with self.client.pipeline(transaction=False) as pipe:
                for p in self.shards:
                    pipe.hmget(p + "off", names)
                rows = await pipe.execute()
        lowest: dict[str, int] = {}
        for known, values in zip(self.shard_applied, rows, strict=True):
            for n, v in zip(names, values, strict=True):
                known[n] = -1 if v is None else int(v)
                lowest[n] = min(lowest.get(n, known[n]), known[n])
        return lowest

    def plan(
        self,
        records: list[Record],
        applied: Mapping[str, int],
        gaps: Collection[str] = (),
    ) -> AnyPlan:
        if len(self.shards) == 1:
            return plan_batch(records, self.rules, applied, gaps)
        per_shard = [
            {tp: max(o, known.get(tp, -1)) for tp, o in applied.items()}
            for known in self.shard_applied
        ]
        return plan_shards(records, self.rules, per_shard, gaps)

    def _parts(self, plan: AnyPlan) -> list[tuple[int, Plan]]:
        if isinstance(plan, ShardedPlan):
            return [(s, p) for s, p in enumerate(plan.parts) if p is not None]
        return [(0, plan)]

    async def _labels(self, parts: list[tuple[int, Plan]]) -> dict[str, str]:
        """The parts' regions as the campaign decided them under its cap
        (lua/fold.lua decides): admitted, their own name; refused, `other`;
        not decided yet, "" (the step counts them pending). A decision never
        changes, and once the cap is reached every new region is refused, so
        only a region this store has not seen decided asks Redis."""
        resolved: dict[str, str] = {}
        unknown: list[str] = []
        for _s, part in parts:
            for label in part.labels:
                if label in resolved:
                    continue
                if label in self.admitted:
                    resolved[label] = label
                elif label in self.refused or self.regions_full:
                    resolved[label] = OTHER_REGION
                else:
                    resolved[label] = ""
                    unknown.append(label)
        if unknown:
            p = self.prefix
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.smismember(p + REGIONS_SET, unknown)
                pipe.smismember(p + REGIONS_REFUSED, unknown)
                pipe.scard(p + REGIONS_SET)
                admitted, refused, size = await pipe.execute()
            full = size >= self.rules.max_regions
            for label, yes, no in zip(unknown, admitted, refused, strict=True):
                if yes:
                    self.admitted.add(label)
                    resolved[label] = label
                elif no or full:
                    self.refused.add(label)
                    resolved[label] = OTHER_REGION
            self.regions_full = full
        return resolved

    async def _watermark(self, samples: list[int]) -> int:
        """Several shards: the campaign's watermark after a batch's samples
        (the fold stores them), as every shard's step of the batch gets it."""
        if self.ring is None:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.lrange(self.prefix + "wm", 0, WATERMARK_RING - 1)
                pipe.hget(self.prefix + "meta", "watermark_ms")
                ring, wm = await pipe.execute()
            self.ring = [int(v) for v in ring]
            self.watermark = int(wm or 0)
        merged = [*reversed(samples), *self.ring][:WATERMARK_RING]
        return watermark_from(merged, self.watermark)

    async def _step_args(
        self, parts: list[tuple[int, Plan]], samples: list[int] | None = None
    ) -> list[tuple[int, Plan, list[str], bytes]]:
        """Each part's keys and payload (`samples`: several shards' batch)."""
        wm = None if samples is None else await self._watermark(samples)
        resolved = await self._labels(parts) if any(p.labels for _s, p in parts) else {}
        out = []
        for s, part in parts:
            prefix = self.shards[s]
            labels = [resolved[label] or label for label in part.labels]
            pending = [int(not resolved[label]) for label in part.labels]
            payload = encode_plan(
                part,
                self.rules,
                labels,
                pending,
                self.folded.get(s, 0),
                wm,
            )
            keys = (
                step_keys(part, self.rules, prefix)
                if self.cluster
                else [prefix + "off"]
            )
            out.append((s, part, keys, payload))
        return out

    async def send(self, plan: AnyPlan, now_ms: int) -> Awaitable[Applied | Stale]:
        """Send the plan's atomic step; returns what waits for its outcome.

        When this returns the whole step has left the process (a plan is a few
        MB), so Redis runs it while the worker plans the next batch: sent from a
        task instead, the rest of the step would wait in asyncio's buffer until
        the planning yields. A Redis Cluster client, or a sharded plan, takes
        the plain path.
        """
        if not isinstance(self.client, aioredis.Redis) or isinstance(plan, ShardedPlan):
            return asyncio.ensure_future(self.apply(plan, now_ms))
        ((s, _part, keys, payload),) = await self._step_args(self._parts(plan))
        args = (keys[0], self.shards[s], payload, now_ms)
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        try:
            writer = conn._writer  # every byte to the kernel before drain() returns
            if writer is not None:
                writer.transport.set_write_buffer_limits(high=0)
            await conn.send_command("EVALSHA", self._apply.sha, 1, *args)
        except BaseException:
            await pool.release(conn)
            raise
        return asyncio.ensure_future(self._reply(pool, conn, plan, now_ms))

    async def _reply(
        self, pool: Any, conn: Any, plan: Plan, now_ms: int
    ) -> Applied | Stale:
        """The sent step's answer, folded; after a Redis restart lost the
        script, the step again through `apply`, which loads it."""
        try:
            result = await conn.read_response()
        except NoScriptError:  # Redis restarted and lost its script cache
            result = None
        except ResponseError as exc:
            raise _transient(exc) from exc
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)
        if result is None:
            return await self.apply(plan, now_ms)
        return await self._settle([(0, plan, _step_outcome(result))], now_ms)

    async def _run_step(
        self, s: int, keys: list[str], payload: bytes, now_ms: int
    ) -> _Step | Stale:
        args: list[str | bytes | int] = [self.shards[s], payload, now_ms]
        try:
            try:
                result = await self._apply(keys=keys, args=args)
            except NoScriptError:  # Redis restarted and lost its script cache
                self._apply = self.client.register_script(APPLY_LUA)
                result = await self._apply(keys=keys, args=args)
        except ResponseError as exc:
            raise _transient(exc) from exc
        return _step_outcome(result)

    async def apply(self, plan: AnyPlan, now_ms: int) -> Applied | Stale:
        """Each shard's step (at once, on their masters), then the fold."""
        if isinstance(plan, ShardedPlan):
            samples: list[int] | None = plan.samples
        else:
            assert len(self.shards) == 1, "a sharded store applies sharded plans"
            samples = None
        steps = await self._step_args(self._parts(plan), samples)
        outcomes = await asyncio.gather(
            *(
                self._run_step(s, keys, payload, now_ms)
                for s, _p, keys, payload in steps
            )
        )
        return await self._settle(
            [
                (s, part, o)
                for (s, part, _k, _a), o in zip(steps, outcomes, strict=True)
            ],
            now_ms,
            samples,
        )

    async def _settle(
        self,
        done: list[tuple[int, Plan, _Step | Stale]],
        now_ms: int,
        samples: list[int] | None = None,
    ) -> Applied | Stale:
        """Fold what the shards' steps appended; the batch's outcome (stale if
        any shard refused its part: the pipeline plans again, and the shards
        that applied theirs skip it)."""
        stale: Stale | None = None
        aggregates: list[tuple[int, int, bytes]] = []
        targets: dict[str, list[list[Any]]] = {}
        new = dups = late = 0
        for s, part, outcome in done:
            if isinstance(outcome, Stale):
                stale = stale or outcome
                continue
            for tp, (_before, last) in part.offsets.items():
                self.shard_applied[s][tp] = last
            new += outcome.new_events
            dups += outcome.duplicates
            late += outcome.late
            if outcome.seq:
                aggregates.append((s, outcome.seq, outcome.aggregate))
                for b, found in part.targets.items():
                    if found:
                        targets[part.brands[b]] = [
                            [t.kind, t.threshold_fen] for t in found
                        ]
        milestones = (
            await self.fold(aggregates, targets, now_ms, samples) if aggregates else []
        )
        if stale is not None:
            return stale
        return Applied(milestones, new, dups, late)

    async def fold(
        self,
        aggregates: list[tuple[int, int, bytes]],
        targets: dict[str, list[list[Any]]],
        now_ms: int,
        samples: list[int] | None = None,
    ) -> list[Milestone]:
        """Fold shards' aggregates (shard, seq, JSON) into the campaign's slot
        (lua/fold.lua); one a shard has not folded before them (a worker died
        between the steps) is read from the shard's stream and folded first."""
        todo = sorted(aggregates)
        holes: list[int] = []  # shards whose missing aggregates are gone for good
        for _attempt in range(2 * len(self.shards) + 3):
            args: list[str | bytes | int] = [
                self.prefix,
                orjson.dumps(
                    {"a": [[s, q] for s, q, _a in todo], "t": targets, "k": holes}
                ),
                now_ms,
                self.rules.max_regions,
                b"" if samples is None else orjson.dumps(samples),
                self._fold_shards,
                *(a for _s, _q, a in todo),
            ]
            keys = [self.prefix + "folded"]
            try:
                try:
                    result: Any = await self._fold(keys=keys, args=args)
                except NoScriptError:
                    self._fold = self.client.register_script(FOLD_LUA)
                    result = await self._fold(keys=keys, args=args)
            except ResponseError as exc:
                raise _transient(exc) from exc
            if result[0] == b"ok":
                for s, q, _a in todo:
                    self.folded[s] = max(self.folded.get(s, 0), q)
                if samples is not None:
                    self.watermark = int(result[1])
                    self.ring = [int(v) for v in orjson.loads(result[2])]
                return [Milestone(**orjson.loads(r)) for r in result[3:]]
            shard, folded = int(result[1]), int(result[2])
            if result[0] == b"lost":
                # Redis lost the step that made one of the shard's aggregates
                # here: the shard's stream says what it holds past `folded`.
                log.warning(
                    "shard %d: an aggregate to fold is not the one its stream"
                    " holds (Redis lost its last writes); folding the stream's",
                    shard,
                )
                self.folded[shard] = folded
                todo = [e for e in todo if e[0] != shard]
            earlier = await self._unfolded(shard, folded, targets)
            have = {(s, q) for s, q, _a in todo}
            todo = sorted(todo + [e for e in earlier if (e[0], e[1]) not in have])
            first = min((q for s, q, _a in todo if s == shard), default=None)
            if first is not None and first != folded + 1:
                # The campaign's slot went back further than the shard keeps
                # its folded aggregates (FOLD_KEEP): what they added to the
                # rank and the first-hour GMV cannot be folded again.
                log.error(
                    "shard %d: aggregates after %d are gone from its stream;"
                    " the campaign's rank and first-hour GMV miss them",
                    shard,
                    folded,
                )
                holes.append(shard)
            if not todo:
                return []
        msg = "the fold step kept finding earlier aggregates; trying again"
        raise TryAgainError(msg)

    async def _unfolded(
        self, shard: int, folded: int, targets: dict[str, list[list[Any]]]
    ) -> list[tuple[int, int, bytes]]:
        """A shard's aggregates past `folded`, from its stream; their brands'
        milestone targets are added to `targets`."""
        entries: Any = await self.client.xrange(
            self.shards[shard] + "agg", min=f"{folded + 1}-0"
        )
        found = []
        for entry_id, fields in entries:
            seq = int(entry_id.split(b"-")[0])
            found.append((shard, seq, fields[b"a"]))
            for first in orjson.loads(fields[b"a"])["f"]:
                brand = first[0]
                if brand not in targets:
                    targets[brand] = [
                        [t.kind, t.threshold_fen] for t in self.rules.targets(brand)
                    ]
        return found

    async def fold_pending(self, now_ms: int) -> list[Milestone]:
        """Fold every shard's aggregates not folded yet (a worker died between
        a shard's step and the fold, and no step of that shard followed)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for p in self.shards:
                pipe.hget(p + "meta", "fold_seq")
            pipe.hgetall(self.prefix + "folded")
            *seqs, folded_raw = await pipe.execute()
        folded = {int(k): int(v) for k, v in folded_raw.items()}
        targets: dict[str, list[list[Any]]] = {}
        pending: list[tuple[int, int, bytes]] = []
        for s, raw in enumerate(seqs):
            if raw is not None and int(raw) > folded.get(s, 0):
                pending.extend(await self._unfolded(s, folded.get(s, 0), targets))
        if not pending:
            return []
        return await self.fold(pending, targets, now_ms)

    async def sum_hashes(self, names: list[str]) -> list[dict[str, int]]:
        """Each of the shards' hashes `names`, summed field by field over the shards."""
        return await sum_shard_hashes(self.client, self.shards, names)

    async def count_unions(self, groups: list[list[str]]) -> list[int]:
        """Distinct members of each group of buyers keys (key names after a
        shard's prefix), over every shard.

        A buyers key is a set of user ids up to BUYERS_EXACT of them, then a
        HyperLogLog (lua/apply.lua). A group whose keys are all sets (or
        missing) and whose union holds at most BUYERS_EXACT ids is counted
        exactly, in Python (the shards' keys may sit on different Redis
        Cluster masters). Any other group is a HyperLogLog union, one PFCOUNT:
        with one shard over its HyperLogLogs and a scratch HyperLogLog of its
        sets' members; with several, over copies of the HyperLogLogs' bytes (a
        HyperLogLog is a string) and that scratch one, all under the
        campaign's tag, dropped after. So a count is a function of the union's
        members only, as one key holding them all would give it: exact up to
        BUYERS_EXACT, a HyperLogLog's estimate past it, whatever the batching,
        the state shards or the channels they came by. Only the groups' own
        keys are read: a set holds at most BUYERS_EXACT members and a
        HyperLogLog 12 KB."""
        for attempt in range(3):
            try:
                return await self._count_unions(groups)
            except ResponseError as exc:
                # A set the step turned into a HyperLogLog between its TYPE and
                # its read: read again (a HyperLogLog never turns back).
                if "WRONGTYPE" not in str(exc) or attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _count_unions(self, groups: list[list[str]]) -> list[int]:
        shards = self.shards
        names = list(dict.fromkeys(p + k for g in groups for k in g for p in shards))
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.type(name)
            kinds = {
                name: (kind.decode() if isinstance(kind, bytes) else str(kind))
                for name, kind in zip(names, await pipe.execute(), strict=True)
            }
        sets = [n for n in names if kinds[n] == "set"]
        copied = len(shards) > 1  # HyperLogLogs are copied under the campaign's tag
        hlls = sorted(n for n in names if kinds[n] == "string")
        async with self.client.pipeline(transaction=False) as pipe:
            for name in sets:
                pipe.smembers(name)
            for name in hlls if copied else ():
                pipe.get(name)
            answers = await pipe.execute()
        members: dict[str, set[bytes]] = dict(
            zip(sets, answers[: len(sets)], strict=True)
        )
        raw: dict[str, bytes | None] = dict(
            zip(hlls if copied else [], answers[len(sets) :], strict=True)
        )
        estimated_keys = set(hlls)
        scratch = f"{self.prefix}tmp:{uuid.uuid4().hex}:"
        made: list[str] = []
        out: list[int] = []
        at: dict[int, int] = {}  # group -> the place of its PFCOUNT's answer
        queued = 0
        async with self.client.pipeline(transaction=False) as pipe:
            for g, group in enumerate(groups):
                keys = [p + k for k in group for p in shards]
                union: set[bytes] = set()
                for key in keys:
                    union.update(members.get(key, ()))
                out.append(len(union))
                estimated = [key for key in keys if key in estimated_keys]
                if not estimated and len(union) <= BUYERS_EXACT:
                    continue
                counted: list[str] = []
                for i, key in enumerate(estimated):
                    value = raw.get(key)
                    if not copied:
                        counted.append(key)
                    elif value is not None:  # None: gone since its TYPE (a reset)
                        counted.append(f"{scratch}{g}:{i}")
                        made.append(counted[-1])
                        pipe.set(counted[-1], value, px=60_000)
                        queued += 1
                if union:
                    extra = f"{scratch}{g}:s"
                    listed = sorted(union)
                    for i in range(0, len(listed), 10_000):
                        pipe.execute_command("PFADD", extra, *listed[i : i + 10_000])
                        queued += 1
                    pipe.pexpire(extra, 60_000)
                    queued += 1
                    counted.append(extra)
                    made.append(extra)
                if counted:
                    # By name: redis-py's cluster pipeline refuses `.pfcount(*keys)`
                    # in case the keys span slots; these share one.
                    pipe.execute_command("PFCOUNT", *counted)
                    at[g] = queued
                    queued += 1
            done = await pipe.execute() if queued else []
        if made:
            await self.client.unlink(*made)
        for g, i in at.items():
            out[g] = int(done[i])
        return out

    async def report(
        self, top: int | None = None, minutes: int = DEFAULT_MINUTES
    ) -> dict[str, Any]:
        # Brands and totals are sums of brand x channel and channel counters
        # over the shards; buyers are unions of buyers keys (count_unions).
        p, c = self.prefix, self.client
        if top is None:
            order = await self._every_brand()
        else:
            order = await self.top_candidates(top)
        async with c.pipeline(transaction=False) as pipe:
            pipe.hgetall(p + "ms")
            pipe.xrange(p + "alerts")
            pipe.hget(p + "meta", "watermark_ms")  # the campaign's (lua/fold.lua)
            pipe.smembers(p + REGIONS_SET)
            milestones_raw, alerts_raw, watermark, admitted_raw = await pipe.execute()
        # The facets: regions, first hour by channel, minutes (one field a
        # minute and counter: 5 x 1,440 a day, read whole).
        (
            channels_raw,
            dead_raw,
            meta_raw,
            regions_raw,
            pending_raw,
            hour_raw,
            minutes_raw,
        ) = await self.sum_hashes(
            [
                "ch",
                "dl",
                "meta",
                REGIONS_KEY,
                REGIONS_KEY + "p",
                FIRST_HOUR_KEY,
                MINUTES_KEY,
            ]
        )
        regions, region_keys = regions_view(
            regions_raw, pending_raw, {m.decode() for m in admitted_raw}
        )
        details = await self.sum_hashes(["bc:" + b for b in order])
        rows: list[BrandRow] = []
        for b, raw in zip(order, details, strict=True):
            by_channel = _split_channels(raw)
            counters = {
                name: sum(ch[name] for ch in by_channel.values()) for name in COUNTERS
            }
            rows.append(BrandRow(b, counters, 0, by_channel, {}))
        # The rank's scores are doubles: order by the exact sums.
        rows.sort(key=lambda r: (-r.counters["gross_gmv_fen"], r.brand_id))
        rows = rows[: top if top is not None else None]
        groups: list[list[str]] = [[f"u:ch:{ch}" for ch in CHANNELS]]
        groups.extend([f"u:ch:{ch}"] for ch in CHANNELS)
        for row in rows:
            keys = [f"u:bc:{row.brand_id}:{ch}" for ch in row.by_channel]
            if keys:  # the union: the brand's distinct buyers
                groups.append(keys)
                groups.extend([key] for key in keys)
        groups.extend(
            [REGION_BUYERS + name for name in region_keys[region]] for region in regions
        )
        counts = iter(await self.count_unions(groups))
        buyers_total = next(counts)
        channel_buyers = {ch: next(counts) for ch in CHANNELS}
        for row in rows:
            if row.by_channel:
                row.buyers = next(counts)
                for channel in row.by_channel:
                    row.channel_buyers[channel] = next(counts)
        region_buyers = {region: next(counts) for region in regions}

        channels = _split_channels(channels_raw)
        totals = {name: sum(ch[name] for ch in channels.values()) for name in COUNTERS}
        return shape_report(
            rules=self.rules,
            totals=totals,
            buyers=buyers_total,
            channels=channels,
            channel_buyers={ch: channel_buyers[ch] for ch in channels},
            brands=rows,
            milestones=[orjson.loads(v) for v in milestones_raw.values()],
            dead_letters=dead_raw,
            out_of_window=meta_raw.get("out_of_window", 0),
            watermark_ms=int(watermark or 0),
            late=meta_raw.get("late", 0),
            alerts=decode_alerts(alerts_raw),
            regions=regions,
            region_buyers=region_buyers,
            first_hour=split_labelled(hour_raw),
            minutes=latest_minutes(minutes_raw, minutes),
        )

    async def _every_brand(self) -> list[str]:
        """Every brand, by the rank's score (the exact sort comes after)."""
        p = self.prefix
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.smembers(p + "brands")
            pipe.zrange(p + "rank", 0, -1, withscores=True)
            members, ranked = await pipe.execute()
        gross = {m.decode(): s for m, s in ranked}
        names = {m.decode() for m in members} | set(gross)
        return sorted(names, key=lambda b: (-gross.get(b, 0.0), b))

    async def top_candidates(self, top: int) -> list[str]:
        """A few more than the `top` first brands in report order (gross GMV
        down, then id up), read from the `rank` sorted set, not from every brand.

        The caller reads these brands' hashes, sorts them by their exact sums and
        keeps `top`. A score below 2^53 is exact (integer adds of doubles), so the
        brands above the `top`-th score are in, and of those tied with it the
        lexicographically first (Redis orders equal scores by member bytes, which
        is code point order in UTF-8) fill the rest. At 2^53 fen (about ¥90
        trillion a brand) and above a score may be off by a few ulps: every brand
        within 2^-30 of the cut (10^3 ulps) is read too, up to `top` + 1,000.
        With fewer than `top` brands that sold, the rest are the first ids among
        the brands with no gross GMV, found by SCAN with `top` ids kept.
        """
        p, c = self.prefix, self.client
        if top < 1:
            return []
        ranked: Any = await c.zrevrange(p + "rank", 0, top - 1, withscores=True)
        sold = [(m.decode(), score) for m, score in ranked if score > 0]
        if len(sold) < top:
            return [b for b, _ in sold] + await self._first_unsold(
                top - len(sold), {b for b, _ in sold}
            )
        cut = sold[-1][1]
        if cut >= EXACT_SCORE:
            low = cut * (1 - 2**-30)
            near: Any = await c.zrevrangebyscore(
                p + "rank", "+inf", low, start=0, num=top + NEAR_TIES
            )
            return [m.decode() for m in near]
        above = [b for b, score in sold if score > cut]
        tied: Any = await c.zrangebyscore(
            p + "rank", cut, cut, start=0, num=top - len(above)
        )
        return above + [m.decode() for m in tied]

    async def _first_unsold(self, n: int, sold: set[str]) -> list[str]:
        """The `n` smallest ids of the brands not in `sold`, in O(n) memory."""
        first: list[str] = []
        chunk: set[str] = set()
        async for raw in self.client.sscan_iter(self.prefix + "brands", count=10_000):
            name = raw.decode()
            if name not in sold:
                chunk.add(name)
            if len(chunk) >= 10_000:
                first = heapq.nsmallest(n, chunk.union(first))
                chunk = set()
        return heapq.nsmallest(n, chunk.union(first))

    async def reset(self) -> int:
        deleted = 0
        for prefix in self.layout.scan_prefixes:
            scan: dict[str, Any] = {"match": glob_escape(prefix) + "*", "count": 1000}
            if isinstance(self.client, RedisCluster):  # narrows the type
                # One shard: every key shares the campaign's hash tag, so only
                # the node that owns its slot is scanned; several: every primary.
                scan["target_nodes"] = (
                    self.client.get_node_from_key(self.prefix + "off")
                    if len(self.shards) == 1
                    else RedisCluster.PRIMARIES
                )
            batch: list[bytes] = []
            async for key in self.client.scan_iter(**scan):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += await self._unlink(batch)
                    batch = []
            if batch:
                deleted += await self._unlink(batch)
        self.shard_applied = [{} for _ in self.shards]
        self.folded = {}
        self.admitted = set()
        self.refused = set()
        self.regions_full = False
        self.ring = None
        self.watermark = 0
        return deleted

    async def _unlink(self, keys: list[bytes]) -> int:
        """UNLINK keys that may span slots (one call per key on a cluster)."""
        if self.cluster and len(self.shards) > 1:
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    # by name: the cluster client's `unlink` splits keys by slot
                    # as a coroutine of its own, which a pipeline cannot queue
                    pipe.execute_command("UNLINK", key)
                return sum(await pipe.execute())
        return int(await self.client.unlink(*keys))


class MemoryStore:
    """The same state in process memory, for unit tests of the worker's logic."""

    def __init__(self, rules: CampaignRules) -> None:
        self.rules = rules
        self.state = CampaignState()
        self._lock = asyncio.Lock()

    async def applied_offsets(self, partitions: Iterable[str]) -> dict[str, int]:
        return {tp: self.state.offsets.get(tp, -1) for tp in partitions}

    def plan(
        self,
        records: list[Record],
        applied: Mapping[str, int],
        gaps: Collection[str] = (),
    ) -> AnyPlan:
        return plan_batch(records, self.rules, applied, gaps)

    async def apply(self, plan: AnyPlan, now_ms: int) -> Applied | Stale:
        assert isinstance(plan, Plan), "the in-memory store keeps one shard"
        async with self._lock:
            return apply_plan(self.state, plan, self.rules, now_ms)

    async def send(self, plan: AnyPlan, now_ms: int) -> Awaitable[Applied | Stale]:
        return asyncio.ensure_future(self.apply(plan, now_ms))

    async def report(
        self, top: int | None = None, minutes: int = DEFAULT_MINUTES
    ) -> dict[str, Any]:
        s = self.state
        regions = split_labelled(s.hashes.get(REGIONS_KEY, {}))
        order = sorted(s.brands, key=lambda b: (-s.brands[b]["gross_gmv_fen"], b))
        rows = []
        for b in order[: top if top is not None else None]:
            by_channel = {ch: v for (bb, ch), v in s.brand_channels.items() if bb == b}
            rows.append(
                BrandRow(
                    b,
                    s.brands[b],
                    len(s.buyers.get((b,), ())),
                    by_channel,
                    {ch: len(s.buyers.get((b, ch), ())) for ch in by_channel},
                )
            )
        return shape_report(
            rules=self.rules,
            totals=s.totals,
            buyers=len(s.buyers.get((), ())),
            channels=s.channels,
            channel_buyers={ch: len(s.buyers.get(("", ch), ())) for ch in s.channels},
            brands=rows,
            milestones=[
                {
                    "kind": m.kind,
                    "brand_id": m.brand_id,
                    "threshold_fen": m.threshold_fen,
                    "crossed_at_ms": m.crossed_at_ms,
                    "detected_at_ms": m.detected_at_ms,
                }
                for m in s.milestones.values()
            ],
            dead_letters=s.dead_letters,
            out_of_window=s.out_of_window,
            watermark_ms=s.watermark_ms,
            late=s.late,
            regions=regions,
            region_buyers={
                r: len(s.facet_buyers.get(REGION_BUYERS + r, ())) for r in regions
            },
            first_hour=split_labelled(s.hashes.get(FIRST_HOUR_KEY, {})),
            minutes=latest_minutes(s.hashes.get(MINUTES_KEY, {}), minutes),
        )

    async def reset(self) -> int:
        self.state = CampaignState()
        return 1
