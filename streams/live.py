"""The live view (GET /, /api/live, `presale top`): a few cheap Redis reads.

The full report reads every brand (5,000 hashes and HyperLogLogs in the
first-hour recording); the live view reads the campaign's channel totals, the
top N of the rank, the milestones and the newest alerts, whatever the number
of brands (measured in docs/ops-view.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from processors.counting import (
    FIRST_HOUR_KEY,
    MINUTES_KEY,
    REGIONS_KEY,
    REGIONS_SET,
    CampaignRules,
)
from processors.state import COUNTERS
from streams.keys import Layout
from streams.metrics import Metrics
from streams.report import (
    FIRST_HOUR_FIELDS,
    campaign_block,
    first_hour_block,
    first_hour_summary,
    latest_minutes,
    milestone_order,
    ratio,
    split_labelled,
)
from streams.store import (
    _int_map,
    _split_channels,
    decode_alerts,
    regions_view,
    sum_shard_hashes,
)

log = logging.getLogger(__name__)

# Brands, milestones and alerts on one screen; more is what the report is for.
DEFAULT_TOP: Final = 20
MAX_TOP: Final = 100
RECENT: Final = 20
# Prometheus shows the first ranks of the leaderboard (bounded label values).
METRIC_RANKS: Final = 10
BRAND_FIELDS: Final = (
    "gross_gmv_fen",
    "net_gmv_fen",
    "first_hour_gross_gmv_fen",
    "orders",
    "clicks",
    "carts",
    "vip_orders",
)
REGION_FIELDS: Final = ("gross_gmv_fen", "orders", "clicks", "vip_orders")
# The GMV curve: the latest hour of event-time minutes.
CURVE_MINUTES: Final = 60


def alerts_key(prefix: str) -> str:
    """The Redis stream of surge alerts, one JSON `value` field an entry."""
    return prefix + "alerts"


def parse_top(raw: str | None, default: int = DEFAULT_TOP) -> int:
    """A `top` query parameter, clamped to 1..MAX_TOP; junk means the default."""
    # isascii: `²` is a digit to isdigit() and not to int() (it answered 500).
    if raw is None or not (raw.strip().isascii() and raw.strip().isdigit()):
        return default
    return max(1, min(MAX_TOP, int(raw)))


async def read_live(
    client: aioredis.Redis,
    prefix: str,
    rules: CampaignRules,
    top: int = DEFAULT_TOP,
    recent: int = RECENT,
) -> dict[str, Any]:
    """The live view model: totals, first-hour summary, the top brands, the
    newest milestones and alerts. `consumer_lag` is left to the caller."""
    p = prefix
    shards = Layout(prefix, rules.state_shards).shard
    async with client.pipeline(transaction=False) as pipe:
        pipe.zrevrange(p + "rank", 0, top - 1)
        pipe.scard(p + "brands")
        # by name: redis-py's cluster pipeline refuses `.pfcount()` (streams/store.py)
        pipe.execute_command("PFCOUNT", p + "rooms")
        pipe.hgetall(p + "ms")
        pipe.xrevrange(alerts_key(p), count=recent)
        pipe.xlen(alerts_key(p))
        pipe.hgetall(p + "meta")
        pipe.smembers(p + REGIONS_SET)
        (
            ranked,
            n_brands,
            n_rooms,
            ms_raw,
            alerts_raw,
            n_alerts,
            meta,
            admitted,
        ) = await pipe.execute()
    brand_ids = [b.decode() for b in ranked]
    # Summed over the state shards: the totals, dead letters, the facets
    # (first hour by channel, regions: at most PRESALE_MAX_REGIONS + 1, every
    # minute: 5 fields a minute), and the top brands' counters.
    (
        channels_raw,
        dl,
        hour_raw,
        regions_raw,
        pending_raw,
        minutes_raw,
        *details,
    ) = await sum_shard_hashes(
        client,
        shards,
        [
            "ch",
            "dl",
            FIRST_HOUR_KEY,
            REGIONS_KEY,
            REGIONS_KEY + "p",
            MINUTES_KEY,
            *("bc:" + b for b in brand_ids),
        ],
    )

    brands = []
    for b, raw in zip(brand_ids, details, strict=True):
        by_channel = _split_channels(raw)
        row = {f: sum(ch.get(f, 0) for ch in by_channel.values()) for f in BRAND_FIELDS}
        brands.append(
            {
                "brand_id": b,
                **row,
                "vip_share": ratio(row["vip_orders"], row["orders"]),
                "baseline_first_hour_gmv_fen": rules.baselines_fen.get(b, 0),
            }
        )
    # The rank's scores are doubles; order by the exact sums, ties by id.
    brands.sort(key=lambda r: (-r["gross_gmv_fen"], r["brand_id"]))
    for i, row in enumerate(brands, start=1):
        row["rank"] = i

    channels = _split_channels(channels_raw)
    totals = {c: sum(ch[c] for ch in channels.values()) for c in COUNTERS}
    milestones = [orjson.loads(v) for v in ms_raw.values()]
    newest = sorted(milestones, key=milestone_order, reverse=True)[:recent]
    meta_ints = _int_map(meta)
    by_hour = split_labelled(hour_raw)
    base = rules.channel_baselines
    hour_total = {
        f: sum(c.get(f, 0) for c in by_hour.values()) for f in FIRST_HOUR_FIELDS
    }
    last_total = (
        (
            sum(v[0] for v in base.values()),
            sum(v[1] for v in base.values()),
            sum(v[2] for v in base.values()),
        )
        if base
        else None
    )
    regions, _names = regions_view(
        regions_raw, pending_raw, {m.decode() for m in admitted}
    )
    return {
        "campaign": campaign_block(rules),
        "totals": totals,
        "channels": {ch: channels[ch]["gross_gmv_fen"] for ch in sorted(channels)},
        "first_hour": {
            **first_hour_summary(milestones, rules),
            **first_hour_block(hour_total, last_total),
        },
        # Each channel's first hour against last year's (CONTRACT 3b).
        "first_hour_channels": {
            ch: first_hour_block(by_hour.get(ch, {}), base.get(ch))
            for ch in sorted(set(channels) | set(by_hour))
        },
        "regions": {
            r: {f: regions[r].get(f, 0) for f in REGION_FIELDS}
            for r in sorted(regions, key=lambda r: -regions[r].get("gross_gmv_fen", 0))
        },
        "minutes": latest_minutes(minutes_raw, CURVE_MINUTES),
        "brand_count": int(n_brands),
        "room_count": int(n_rooms),
        "brands": brands,
        "milestone_count": len(milestones),
        "milestones": newest,
        "alert_count": int(n_alerts),
        "alerts": decode_alerts(alerts_raw),
        "dead_letters": sum(dl.values()),
        "watermark_ms": meta_ints.get("watermark_ms", 0),
        "consumer_lag": None,
        "read_at_ms": int(time.time() * 1000),
    }


class LiveReader:
    """read_live() shared by every viewer: one Redis read per `ttl_s` and `top`,
    however many pages poll the worker."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        rules: CampaignRules,
        ttl_s: float = 0.5,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.rules = rules
        self.ttl_s = ttl_s
        self._cache: dict[int, tuple[float, asyncio.Future[dict[str, Any]]]] = {}

    async def read(self, top: int = DEFAULT_TOP) -> dict[str, Any]:
        now = time.monotonic()
        hit = self._cache.get(top)
        if (
            hit is None
            or now - hit[0] > self.ttl_s
            or (hit[1].done() and hit[1].exception() is not None)
        ):
            task = asyncio.ensure_future(
                read_live(self.client, self.prefix, self.rules, top)
            )
            self._cache[top] = hit = (now, task)
        return dict(await asyncio.shield(hit[1]))


def export(view: Mapping[str, Any], metrics: Metrics) -> None:
    """The view's campaign-wide levels as Prometheus gauges (bounded labels)."""
    totals = view["totals"]
    for kind in ("gross", "net", "first_hour_gross"):
        metrics.gmv_fen.labels(kind).set(totals[f"{kind}_gmv_fen"])
    for channel, gross in view["channels"].items():
        metrics.channel_gmv_fen.labels(channel).set(gross)
    first_hour = view["first_hour"]
    for threshold_fen, n in first_hour["brands_reached"].items():
        metrics.brands_reached.labels(threshold_fen).set(n)
    metrics.brands_doubled.set(first_hour["brands_doubled"])
    metrics.distinct_ids.labels("brands").set(view["brand_count"])
    metrics.distinct_ids.labels("rooms").set(view["room_count"])
    # Bounded: 7 channels x 3 measures; regions capped by PRESALE_MAX_REGIONS.
    for channel, block in view.get("first_hour_channels", {}).items():
        for measure in ("clicks", "orders", "gross_gmv"):
            value = block["vs_last_year"][measure]
            if value is not None:
                metrics.channel_vs_last_year.labels(channel, measure).set(value)
    for region, row in view.get("regions", {}).items():
        metrics.region_gmv_fen.labels(region).set(row["gross_gmv_fen"])
    brands = view["brands"]
    for rank in range(1, METRIC_RANKS + 1):
        gross = brands[rank - 1]["gross_gmv_fen"] if rank <= len(brands) else 0
        metrics.top_brand_gmv_fen.labels(str(rank)).set(gross)


# The page is one static file; it only reads (GET /api/live) from its own origin.
PAGE_HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
    ),
}


def page_html() -> bytes:
    return resources.files("streams").joinpath("web/index.html").read_bytes()


def install(
    app: Any,
    client: aioredis.Redis,
    prefix: str,
    rules: CampaignRules,
    metrics: Metrics,
    worker_lag: Callable[[], int | None],
) -> LiveReader:
    """GET / (the page), GET /api/live (its JSON) and a timer that exports the
    campaign's GMV levels to Prometheus, on the worker's Faust app. Faust views
    made from a function answer GET and HEAD only: other methods get 405."""
    reader = LiveReader(client, prefix, rules)
    html = page_html().decode()

    @app.page("/", name="live_page")
    async def live_page(web: Any, request: Any) -> Any:
        return web.html(html, headers=dict(PAGE_HEADERS))

    @app.page("/api/live", name="live_api")
    async def live_api(web: Any, request: Any) -> Any:
        try:
            view = await reader.read(parse_top(request.query.get("top")))
        except (RedisError, OSError) as exc:
            return web.json(
                {"error": f"cannot read Redis: {exc}"},
                status=503,
                headers={"Cache-Control": "no-store"},
            )
        view["consumer_lag"] = worker_lag()
        return web.json(view, headers={"Cache-Control": "no-store"})

    @app.timer(interval=2.0)
    async def export_live() -> None:
        try:
            export(await reader.read(), metrics)
        except (RedisError, OSError) as exc:
            log.warning("live view read failed (%r); gauges kept", exc)

    return reader
