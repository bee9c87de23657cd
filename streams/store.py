"""Where the campaign state lives: one Protocol, a Redis store and an in-memory one."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Iterable, Mapping
from importlib import resources
from itertools import chain
from typing import Any, Final, Protocol

import orjson
import redis.asyncio as aioredis
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
    REGIONS_SET,
    CampaignRules,
    Plan,
)
from processors.events import CHANNELS
from processors.milestones import Milestone
from processors.state import COUNTERS, Applied, CampaignState, Stale, apply_plan
from processors.surge import CLOCK_CHUNK_OFFSETS, CLOCK_MIN_EVENTS
from streams.connect import redis_client
from streams.errors import RedisUnavailable, RulesMismatch
from streams.report import (
    DEFAULT_MINUTES,
    BrandRow,
    latest_minutes,
    shape_report,
    split_labelled,
)
from streams.settings import Settings

APPLY_LUA: Final = resources.files("streams").joinpath("lua/apply.lua").read_text()
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

    async def apply(self, plan: Plan, now_ms: int) -> Applied | Stale:
        """Apply one plan atomically with its offsets, or refuse it as stale."""
        ...

    async def send(self, plan: Plan, now_ms: int) -> Awaitable[Applied | Stale]:
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


def encode_plan(plan: Plan, rules: CampaignRules) -> bytes:
    """The plan in the compact JSON shape `lua/apply.lua` reads."""
    click_groups, order_groups = _dedupe_groups(plan, rules.dedupe_horizon_ms)
    return orjson.dumps(
        {
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
                ]
                for o in plan.orders
            ],
            "x": [[x.brand, x.channel, x.amount_fen, x.profile] for x in plan.cancels],
            # Facets (processors/counting.py:Facet): [key, prefix, label, names,
            # buyers] each; each profile's facet indexes; the capped labels,
            # their set, cap and overflow.
            "gf": [list(f) for f in plan.facets],
            "g": plan.profiles,
            "lb": plan.labels,
            "lk": REGIONS_SET,
            "lm": plan.label_cap,
            "lo": OTHER_REGION,
            "dc": click_groups,
            "dr": order_groups,
            "t": {
                str(b): [[t.kind, t.threshold_fen] for t in targets]
                for b, targets in plan.targets.items()
                if targets
            },
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
            "off", "meta", "dl", "wm", "dd:gens", "brands", "rank", "fh", "ms",
            "outbox", "sm:idx", "clock", "clock:part", "ch",
            REGIONS_SET, REGIONS_KEY, FIRST_HOUR_KEY, MINUTES_KEY,
        )
    ]  # fmt: skip
    keys.extend(p + "bc:" + b for b in plan.brands)
    keys.extend(p + f"sm:{minute}" for minute in plan.traffic)
    if _rooms(plan):
        keys.append(p + "rooms")  # the rooms HyperLogLog (presale_distinct_ids)
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


def _outcome(result: list[Any]) -> Applied | Stale:
    """What `lua/apply.lua` answered."""
    if result[0] == b"stale":
        return Stale(result[1].decode(), int(result[2]))
    milestones = [Milestone(**orjson.loads(r)) for r in result[4:]]
    return Applied(milestones, int(result[1]), int(result[2]), int(result[3]))


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
        self._apply = client.register_script(APPLY_LUA)

    @classmethod
    def from_url(cls, url: str, prefix: str, rules: CampaignRules) -> RedisStore:
        client = aioredis.Redis.from_url(
            url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30
        )
        return cls(client, prefix, rules)

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
        names = list(partitions)
        if not names:
            return {}
        values = await self.client.hmget(self.prefix + "off", names)
        return {
            n: -1 if v is None else int(v) for n, v in zip(names, values, strict=True)
        }

    async def send(self, plan: Plan, now_ms: int) -> Awaitable[Applied | Stale]:
        """Send the plan's atomic step; returns what waits for its outcome.

        When this returns the whole step has left the process (a plan is a few
        MB), so Redis runs it while the worker plans the next batch: sent from a
        task instead, the rest of the step would wait in asyncio's buffer until
        the planning yields. A Redis Cluster client takes the plain path.
        """
        if not isinstance(self.client, aioredis.Redis):
            return asyncio.ensure_future(self.apply(plan, now_ms))
        payload = encode_plan(plan, self.rules)
        args = (self.prefix + "off", self.prefix, payload, now_ms)
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
        """The sent step's answer; after a Redis restart lost the script, the
        step again through `apply`, which loads it."""
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
        return _outcome(result)

    async def apply(self, plan: Plan, now_ms: int) -> Applied | Stale:
        payload = encode_plan(plan, self.rules)
        keys = (
            step_keys(plan, self.rules, self.prefix)
            if isinstance(self.client, RedisCluster)
            else [self.prefix + "off"]
        )
        try:
            try:
                result = await self._apply(
                    keys=keys, args=[self.prefix, payload, now_ms]
                )
            except NoScriptError:  # Redis restarted and lost its script cache
                self._apply = self.client.register_script(APPLY_LUA)
                result = await self._apply(
                    keys=keys, args=[self.prefix, payload, now_ms]
                )
        except ResponseError as exc:
            raise _transient(exc) from exc
        return _outcome(result)

    async def report(
        self, top: int | None = None, minutes: int = DEFAULT_MINUTES
    ) -> dict[str, Any]:
        # Brands and totals are sums of brand x channel and channel counters;
        # buyers are unions of HyperLogLogs (PFCOUNT over several keys).
        p, c = self.prefix, self.client
        if top is None:
            order = await self._every_brand()
        else:
            order = await self.top_candidates(top)
        async with c.pipeline(transaction=False) as pipe:
            pipe.hgetall(p + "ch")
            # PFCOUNT by name: redis-py's cluster pipeline refuses
            # `.pfcount(*keys)` in case the keys span slots; ours share one.
            pipe.execute_command("PFCOUNT", *(p + "u:ch:" + ch for ch in CHANNELS))
            for channel in CHANNELS:
                pipe.execute_command("PFCOUNT", p + "u:ch:" + channel)
            pipe.hgetall(p + "ms")
            pipe.hgetall(p + "dl")
            pipe.hgetall(p + "meta")
            pipe.xrange(p + "alerts")
            # The facets: regions, first hour by channel, minutes (one field a
            # minute and counter: 5 x 1,440 a day, read whole).
            pipe.hgetall(p + REGIONS_KEY)
            pipe.hgetall(p + FIRST_HOUR_KEY)
            pipe.hgetall(p + MINUTES_KEY)
            head = await pipe.execute()
        channels_raw, buyers_total = head[:2]
        channel_buyers = dict(zip(CHANNELS, head[2 : 2 + len(CHANNELS)], strict=True))
        milestones_raw, dead_raw, meta_raw, alerts_raw = head[
            2 + len(CHANNELS) : 6 + len(CHANNELS)
        ]
        regions_raw, hour_raw, minutes_raw = head[6 + len(CHANNELS) :]
        regions = split_labelled(_int_map(regions_raw))

        async with c.pipeline(transaction=False) as pipe:
            for b in order:
                pipe.hgetall(p + "bc:" + b)
            details = await pipe.execute()
        rows: list[BrandRow] = []
        for b, raw in zip(order, details, strict=True):
            by_channel = _split_channels(_int_map(raw))
            counters = {
                name: sum(ch[name] for ch in by_channel.values()) for name in COUNTERS
            }
            rows.append(BrandRow(b, counters, 0, by_channel, {}))
        # The rank's scores are doubles: order by the exact sums.
        rows.sort(key=lambda r: (-r.counters["gross_gmv_fen"], r.brand_id))
        rows = rows[: top if top is not None else None]
        async with c.pipeline(transaction=False) as pipe:
            for row in rows:
                keys = [f"{p}u:bc:{row.brand_id}:{ch}" for ch in row.by_channel]
                if keys:
                    # the union: the brand's distinct buyers (one slot, as above)
                    pipe.execute_command("PFCOUNT", *keys)
                    for key in keys:
                        pipe.execute_command("PFCOUNT", key)
            for region in regions:
                pipe.execute_command("PFCOUNT", p + REGION_BUYERS + region)
            counts = iter(await pipe.execute())
        for row in rows:
            if row.by_channel:
                row.buyers = next(counts)
                for channel in row.by_channel:
                    row.channel_buyers[channel] = next(counts)
        region_buyers = {region: next(counts) for region in regions}

        channels = _split_channels(_int_map(channels_raw))
        totals = {name: sum(ch[name] for ch in channels.values()) for name in COUNTERS}
        meta = _int_map(meta_raw)
        return shape_report(
            rules=self.rules,
            totals=totals,
            buyers=buyers_total,
            channels=channels,
            channel_buyers={ch: channel_buyers[ch] for ch in channels},
            brands=rows,
            milestones=[orjson.loads(v) for v in milestones_raw.values()],
            dead_letters=_int_map(dead_raw),
            out_of_window=meta.get("out_of_window", 0),
            watermark_ms=meta.get("watermark_ms", 0),
            late=meta.get("late", 0),
            alerts=decode_alerts(alerts_raw),
            regions=regions,
            region_buyers=region_buyers,
            first_hour=split_labelled(_int_map(hour_raw)),
            minutes=latest_minutes(_int_map(minutes_raw), minutes),
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
        pattern = glob_escape(self.prefix) + "*"
        batch: list[bytes] = []
        scan: dict[str, Any] = {"match": pattern, "count": 1000}
        if isinstance(self.client, RedisCluster):
            # Every key shares the campaign's hash tag: scan only the node that
            # owns its slot (a cluster-wide SCAN would visit every primary).
            scan["target_nodes"] = self.client.get_node_from_key(self.prefix + "off")
        async for key in self.client.scan_iter(**scan):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await self.client.unlink(*batch)
                batch = []
        if batch:
            deleted += await self.client.unlink(*batch)
        return deleted


class MemoryStore:
    """The same state in process memory, for unit tests of the worker's logic."""

    def __init__(self, rules: CampaignRules) -> None:
        self.rules = rules
        self.state = CampaignState()
        self._lock = asyncio.Lock()

    async def applied_offsets(self, partitions: Iterable[str]) -> dict[str, int]:
        return {tp: self.state.offsets.get(tp, -1) for tp in partitions}

    async def apply(self, plan: Plan, now_ms: int) -> Applied | Stale:
        async with self._lock:
            return apply_plan(self.state, plan, self.rules, now_ms)

    async def send(self, plan: Plan, now_ms: int) -> Awaitable[Applied | Stale]:
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
