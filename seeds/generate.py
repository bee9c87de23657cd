"""Deterministic generator of recorded presale streams and their companion files.

`presale seeds generate --seed S --scale X --out FILE [--summary]` (or
`python -m seeds.generate ...`) writes FILE (`<name>.jsonl.gz`) and, beside it,
`<name>.baseline.csv`, `<name>.settings.json`, `<name>.lastyear.json` and
`<name>.expected.json`. docs/recordings.md describes the world and how its
headline numbers are reached by construction; the expected report and the
summary are measured by reading the written file back through the reference.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import gzip
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seeds import reference
from seeds.summary import format_summary, summary_facts
from streams.recordings import (
    TOPIC_OF_TYPE,
    Companions,
    is_envelope,
    parse_line,
    topic_of_type,
)

# 2025-10-15 20:00 Beijing time (UTC+8), the 2025 Double 11 presale start.
T0_MS = 1_760_529_600_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000

# Money at --scale 1: the contract's default thresholds ¥10M and ¥100M, and a
# YoY floor of ¥100k (a brand below it last year is too small to "double").
THRESHOLDS_FEN_AT_SCALE_1 = (1_000_000_000, 10_000_000_000)
YOY_MIN_BASELINE_FEN_AT_SCALE_1 = 10_000_000
# 0.0001 puts ¥100M at ¥10k: about 13k orders and 135k records for 5,000
# brands, a 4.5 MB recording made in 5 s. Orders keep real prices, so their
# number grows linearly with the scale (scale 1 would be over 100M orders).
DEFAULT_SCALE = 0.0001

# Last year's facts and this year's planned growth (SEED_FACTS.md).
LIVESTREAM_ROOM_GROWTH = 1.40  # average first-hour clicks per room: +40%
FLASH_SALE_GROWTH = 2.3  # flash-sale orders: "more than 2x"
CONVERSION_LAST_YEAR = 0.12  # orders / clicks in the campaign window
CONVERSION_GROWTH = 1.15  # conversion: +15%
# Last year's first hour per channel (<name>.channels.csv) is this year's
# divided by these: livestream clicks +40%, flash-sale orders 2.3x, both with
# conversion +15% (so flash-sale clicks 2.3 / 1.15 = 2x); the other channels'
# clicks grew 10%, and their orders so that the total's conversion is +15%
# (livestream and flash sale convert better and grew most, so the others'
# conversion grew a little less). Gross GMV grew as orders did.
OTHER_CLICKS_GROWTH = 1.10
CHANNEL_CLICKS_GROWTH = {
    "livestream": LIVESTREAM_ROOM_GROWTH,
    "flash_sale": FLASH_SALE_GROWTH / CONVERSION_GROWTH,
}
# Share of the flagship store's (`apple`, the iPhone maker's) counted orders,
# all its skus, from 88VIP members: the report's `vip_share` of that brand.
FLAGSHIP_VIP_SHARE = 0.55
FLAGSHIP_BRAND_ID = reference.FLAGSHIP_BRAND_ID

PRE_T0_MINUTES = 5  # the recording starts this long before T0
POST_END_MINUTES = 5  # and ends this long after the campaign end
VIP_SHARE = 0.22  # share of shoppers who are 88VIP members

# Noise rates, per valid record unless said otherwise.
DUPLICATE_RATE = 0.015  # producer retries: byte-identical line
RESENT_ORDER_RATE = 0.01  # per order: same order, new event_id
OUT_OF_ORDER_RATE = 0.04  # arrives 5 s .. 4 min late
CANCEL_RATE = 0.03  # per order
CANCEL_FIRST_RATE = 0.12  # per cancel: arrives before its order
CANCEL_TWICE_RATE = 0.2  # per cancel: sent a second time
MALFORMED_RATE = 0.005  # malformed records, each with exactly one defect
TOO_LARGE_BYTES = 70_000  # above the 65,536-byte limit of docs/validation.md

CHANNELS = reference.CHANNELS
ORDER_CHANNEL_WEIGHTS = (24, 20, 18, 7, 12, 13, 6)
BROWSE_CHANNEL_WEIGHTS = (26, 28, 16, 4, 8, 14, 4)
REGION_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("CN-GD", 12), ("CN-ZJ", 9), ("CN-JS", 9), ("CN-SH", 7), ("CN-BJ", 6),
    ("CN-SD", 6), ("CN-SC", 5), ("CN-HB", 4), ("CN-HA", 4), ("CN-FJ", 4),
    ("CN-HN", 3), ("CN-AH", 3), ("CN-HE", 3), ("CN-LN", 3), ("CN-SN", 2),
    ("CN-CQ", 2), ("CN-TJ", 2), ("CN-YN", 2), ("CN-GX", 2), ("CN-JX", 2),
    ("CN-SX", 1), ("CN-HL", 1), ("CN-JL", 1), ("CN-GZ", 1), ("CN-NM", 1),
    ("CN-XJ", 1), ("CN-GS", 1), ("CN-HI", 1), ("CN-NX", 1), ("CN-QH", 1),
    ("CN-XZ", 1),
)  # fmt: skip
# The flagship store's skus: (sku_id, price in fen, share of orders).
FLAGSHIP_SKUS: tuple[tuple[str, int, float], ...] = (
    ("iphone17-pro", 899_900, 0.50),
    ("iphone17", 599_900, 0.20),
    ("iphone17-pro-max", 999_900, 0.12),
    ("airpods-pro-3", 189_900, 0.10),
    ("apple-watch-s11", 299_900, 0.08),
)


class GenerationError(RuntimeError):
    """The generated recording does not show what it was built to show."""


@dataclass(frozen=True, slots=True)
class Options:
    """Command-line options of the generator."""

    out: Path
    seed: int = 2025
    scale: float = DEFAULT_SCALE
    brands: int = 5_000
    top_brands: int = 35
    doubled: int = 1_802
    t0_ms: int = T0_MS
    campaign_minutes: int = 120
    campaign_id: str | None = None
    summary: bool = False


@dataclass(frozen=True, slots=True)
class Money:
    """The scaled money settings."""

    thresholds_fen: tuple[int, ...]
    yoy_min_baseline_fen: int

    @property
    def top_threshold_fen(self) -> int:
        return self.thresholds_fen[-1]

    @classmethod
    def at_scale(cls, scale: float) -> Money:
        return cls(
            thresholds_fen=tuple(
                max(1, round(fen * scale)) for fen in THRESHOLDS_FEN_AT_SCALE_1
            ),
            yoy_min_baseline_fen=max(1, round(YOY_MIN_BASELINE_FEN_AT_SCALE_1 * scale)),
        )


@dataclass(slots=True)
class Brand:
    """One brand of the world."""

    brand_id: str
    rank: int
    budget_fen: int  # planned first-hour gross GMV
    skus: list[tuple[str, int]]  # (sku_id, unit price fen)
    sku_weights: list[float]
    rooms: list[str]


@dataclass(slots=True)
class Order:
    """One order fact (re-sent copies share it)."""

    order_id: str
    ts_ms: int
    brand: Brand
    sku_id: str
    qty: int
    amount_fen: int
    channel: str
    room_id: str | None
    user: int = -1


@dataclass(slots=True)
class _Line:
    """One line of the recording, with the time it arrives at the broker."""

    arrival_ms: int
    seq: int
    event: dict[str, Any] | None = None  # a plain event line
    text: str | None = None  # an envelope (or a pre-rendered plain line)


@dataclass(slots=True)
class Stats:
    """What the generator planned, to check against the read-back report."""

    valid_lines: int = 0
    malformed_by_reason: Counter[str] = field(default_factory=Counter)
    first_hour_gross_fen: dict[str, int] = field(default_factory=dict)
    doubled: list[str] = field(default_factory=list)
    room_clicks: int = 0
    rooms: int = 0
    flash_sale_orders: int = 0
    window_orders: int = 0
    window_clicks: int = 0
    flagship_orders: int = 0
    flagship_vip_orders: int = 0


class TrafficCurve:
    """Relative traffic per event-time minute: a ramp before T0, a rush at T0
    that decays over ~15 minutes to a plateau of 30% of the peak."""

    def __init__(self, t0_ms: int, start_ms: int, end_ms: int) -> None:
        self.t0_ms = t0_ms
        self.start_ms = start_ms
        self.minutes = (end_ms - start_ms) // MINUTE_MS
        cumulative = []
        total = 0.0
        for index in range(self.minutes):
            total += self.weight((start_ms - t0_ms) // MINUTE_MS + index)
            cumulative.append(total)
        self.cumulative = cumulative

    @staticmethod
    def weight(minute: int) -> float:
        if minute < 0:  # the crowd gathers before the start
            return 0.25 + 0.35 * (PRE_T0_MINUTES + minute) / PRE_T0_MINUTES
        rush = 0.5 if minute < 2 else 0.0
        return 0.3 + 0.7 * math.exp(-minute / 15) + rush

    def total(self, low_ms: int, high_ms: int) -> float:
        """Relative traffic in [low_ms, high_ms) (both on the minute grid)."""
        first = (low_ms - self.start_ms) // MINUTE_MS
        last = (high_ms - self.start_ms) // MINUTE_MS
        below = self.cumulative[first - 1] if first > 0 else 0.0
        return self.cumulative[last - 1] - below

    def sample(self, rng: random.Random, low_ms: int, high_ms: int) -> int:
        """An event time in [low_ms, high_ms) (both on the minute grid)."""
        first = (low_ms - self.start_ms) // MINUTE_MS
        last = (high_ms - self.start_ms) // MINUTE_MS
        below = self.cumulative[first - 1] if first > 0 else 0.0
        u = below + rng.random() * (self.cumulative[last - 1] - below)
        index = min(bisect.bisect_right(self.cumulative, u, first, last), last - 1)
        return self.start_ms + index * MINUTE_MS + rng.randrange(MINUTE_MS)


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class World:
    """The generated world: brands, shoppers, orders, funnel, noise."""

    def __init__(self, options: Options) -> None:
        if options.top_brands < 1 or options.brands <= options.top_brands:
            msg = "need 1 <= --top-brands < --brands"
            raise GenerationError(msg)
        self.options = options
        self.rng = random.Random(options.seed)
        self.money = Money.at_scale(options.scale)
        self.t0_ms = options.t0_ms
        self.first_hour_end_ms = options.t0_ms + HOUR_MS
        self.end_ms = options.t0_ms + options.campaign_minutes * MINUTE_MS
        self.rec_start_ms = options.t0_ms - PRE_T0_MINUTES * MINUTE_MS
        self.rec_end_ms = self.end_ms + POST_END_MINUTES * MINUTE_MS
        self.curve = TrafficCurve(self.t0_ms, self.rec_start_ms, self.rec_end_ms)
        self.lines: list[_Line] = []
        self.stats = Stats()
        self.used_ids: set[str] = set()
        self.brands: list[Brand] = []
        self.kol_rooms: list[str] = []
        self.orders: list[Order] = []
        self.baseline_fen: dict[str, int] = {}
        self.lastyear: dict[str, Any] = {}
        # Shoppers, as parallel lists (index = shopper).
        self.user_ids: list[str] = []
        self.user_vip: list[bool] = []
        self.user_region: list[str] = []
        self.vip_users: list[int] = []
        self.plain_users: list[int] = []

    # ----------------------------------------------------------------- ids

    def _unique(self, make: Any) -> str:
        while True:
            candidate = make()
            if candidate not in self.used_ids:
                self.used_ids.add(candidate)
                return str(candidate)

    def event_id(self) -> str:
        return self._unique(lambda: f"{self.rng.getrandbits(64):016x}")

    def order_id(self) -> str:
        # Tmall order numbers are 19 digits.
        return self._unique(lambda: str(self.rng.randrange(10**18, 10**19)))

    # -------------------------------------------------------------- brands

    def build_brands(self) -> None:
        rng = self.rng
        options = self.options
        top_fen = self.money.top_threshold_fen
        width = len(str(options.brands * 2))
        numbers = rng.sample(range(1, 10**width), options.brands * 2)
        self.spare_brand_numbers = numbers[options.brands :]
        self.brand_id_width = width
        for rank in range(1, options.brands + 1):
            if rank == 1:
                brand_id = FLAGSHIP_BRAND_ID
                # The flagship store leads the first hour by far.
                budget = 20.0 * top_fen
            elif rank <= options.top_brands:
                brand_id = f"b{numbers[rank - 1]:0{width}d}"
                heavy = 7.5 * rank**-0.65 * rng.uniform(0.9, 1.1)
                budget = top_fen * max(1.03 + 0.12 * rng.random(), heavy)
            else:
                brand_id = f"b{numbers[rank - 1]:0{width}d}"
                tail = ((options.top_brands + 1) / rank) ** 1.4
                budget = top_fen * min(0.93, 0.93 * tail * rng.lognormvariate(0, 0.25))
            self.brands.append(self._brand(brand_id, rank, max(990, int(budget))))
        kol_count = 12 + options.brands // 100
        self.kol_rooms = [f"kol-{index:03d}" for index in range(1, kol_count + 1)]
        weights = [brand.budget_fen**0.7 for brand in self.brands]
        self.brand_cumweights = list(_accumulate(weights))

    def _brand(self, brand_id: str, rank: int, budget_fen: int) -> Brand:
        rng = self.rng
        if brand_id == FLAGSHIP_BRAND_ID:
            skus = [(sku_id, price) for sku_id, price, _ in FLAGSHIP_SKUS]
            sku_weights = [share for _, _, share in FLAGSHIP_SKUS]
        else:
            # Big brands sell appliances and electronics, the tail sells snacks
            # and t-shirts: median unit price log-uniform in yuan.
            low, high = (199, 2999) if rank <= self.options.top_brands else (29, 1299)
            median_yuan = math.exp(rng.uniform(math.log(low), math.log(high)))
            skus = []
            for index in range(1, rng.randint(2, 6) + 1):
                yuan = max(9, round(median_yuan * rng.lognormvariate(0, 0.35)))
                price_fen = yuan * 100 - (10 if rng.random() < 0.5 else 0)
                skus.append((f"{brand_id}-s{index}", price_fen))
            sku_weights = [rng.random() + 0.2 for _ in skus]
        if rank <= 10:
            room_count = 3
        elif rank <= 50:
            room_count = 2
        elif rank <= self.options.brands // 5:
            room_count = 1 if rng.random() < 0.5 else 0
        else:
            room_count = 0
        rooms = [f"{brand_id}-live{index}" for index in range(1, room_count + 1)]
        return Brand(brand_id, rank, budget_fen, skus, sku_weights, rooms)

    # ------------------------------------------------------------ shoppers

    def build_users(self, count: int) -> None:
        rng = self.rng
        regions = [region for region, _ in REGION_WEIGHTS]
        region_weights = [weight for _, weight in REGION_WEIGHTS]
        for index in range(count):
            vip = rng.random() < VIP_SHARE
            self.user_ids.append(f"u{index + 1:08d}")
            self.user_vip.append(vip)
            self.user_region.append(rng.choices(regions, region_weights)[0])
            (self.vip_users if vip else self.plain_users).append(index)

    def buyer(self, pool: list[int] | None = None) -> int:
        """A shopper; heavy buyers (low indices) buy more often."""
        pool_size = len(pool) if pool is not None else len(self.user_ids)
        index = int(pool_size * self.rng.random() ** 1.6)
        return pool[index] if pool is not None else index

    # -------------------------------------------------------------- orders

    def channel_and_room(
        self, brand: Brand, weights: Sequence[int]
    ) -> tuple[str, str | None]:
        channel = self.rng.choices(CHANNELS, weights)[0]
        if channel != "livestream":
            return channel, None
        if brand.rooms and self.rng.random() < 0.6:
            return channel, self.rng.choice(brand.rooms)
        return channel, self.rng.choice(self.kol_rooms)

    def make_orders(
        self,
        brand: Brand,
        budget_fen: int,
        low_ms: int,
        high_ms: int,
        *,
        reach: bool,
        cut: bool = True,
    ) -> None:
        """Orders of `brand` with event time in [low_ms, high_ms).

        reach=True: keep ordering until the gross reaches `budget_fen`.
        reach=False: stop before the gross would pass `budget_fen`. When the
        first order alone would pass it, cut=True cuts it down to the budget
        (a deep discount: every brand sells in the first hour), cut=False
        places it whole with probability budget / amount (the same expected
        GMV with far fewer orders from the long tail).
        """
        rng = self.rng
        total_fen = 0
        while True:
            sku_id, price_fen = rng.choices(brand.skus, brand.sku_weights)[0]
            qty = rng.choices((1, 2, 3), (85, 11, 4))[0]
            amount_fen = price_fen * qty
            if not reach and total_fen + amount_fen > budget_fen:
                if total_fen > 0:
                    return
                if cut:
                    qty, amount_fen = 1, budget_fen
                elif rng.random() >= budget_fen / amount_fen:
                    return
            channel, room_id = self.channel_and_room(brand, ORDER_CHANNEL_WEIGHTS)
            ts_ms = self.curve.sample(rng, low_ms, high_ms)
            self.orders.append(
                Order(
                    self.order_id(),
                    ts_ms,
                    brand,
                    sku_id,
                    qty,
                    amount_fen,
                    channel,
                    room_id,
                )
            )
            total_fen += amount_fen
            if total_fen >= budget_fen:
                return

    def build_orders(self) -> None:
        rng = self.rng
        # After the first hour a brand sells at the pace of the traffic curve,
        # so order traffic has no step at T0 + 1 h.
        later_share = self.curve.total(
            self.first_hour_end_ms, self.end_ms
        ) / self.curve.total(self.t0_ms, self.first_hour_end_ms)
        for brand in self.brands:
            is_top = brand.rank <= self.options.top_brands
            self.make_orders(
                brand,
                brand.budget_fen,
                self.t0_ms,
                self.first_hour_end_ms,
                reach=is_top,
            )
            if self.end_ms > self.first_hour_end_ms:
                later_fen = int(brand.budget_fen * later_share * rng.uniform(0.9, 1.1))
                self.make_orders(
                    brand,
                    later_fen,
                    self.first_hour_end_ms,
                    self.end_ms,
                    reach=False,
                    cut=False,
                )
        # A few orders just before T0 and after the end: valid, not counted.
        outside = max(4, len(self.orders) // 250)
        for index in range(outside):
            brand = self.brands[int(len(self.brands) * rng.random() ** 2)]
            low, high = (
                (self.rec_start_ms, self.t0_ms)
                if index % 2 == 0
                else (self.end_ms, self.rec_end_ms)
            )
            self.make_orders(brand, brand.skus[0][1], low, high, reach=True)

    def assign_buyers(self) -> None:
        """Give each order a shopper; the flagship brand's counted orders (the
        campaign window, all its skus) get exactly round(55%) 88VIP buyers, so
        the report shows that brand's `vip_share` at about 0.55."""
        rng = self.rng
        flagship = [
            order
            for order in self.orders
            if order.brand.brand_id == FLAGSHIP_BRAND_ID
            and self.t0_ms <= order.ts_ms < self.end_ms
        ]
        vip_count = round(FLAGSHIP_VIP_SHARE * len(flagship))
        vip_orders = {id(order) for order in rng.sample(flagship, vip_count)}
        flagship_ids = {id(order) for order in flagship}
        for order in self.orders:
            if id(order) in flagship_ids:
                pool = self.vip_users if id(order) in vip_orders else self.plain_users
                order.user = self.buyer(pool)
            else:
                order.user = self.buyer()
        self.stats.flagship_orders = len(flagship)
        self.stats.flagship_vip_orders = vip_count

    # -------------------------------------------------------------- events

    def event(
        self,
        event_type: str,
        ts_ms: int,
        user: int,
        brand: Brand,
        sku_id: str | None,
        channel: str,
        room_id: str | None,
        qty: int | None = None,
        order_id: str | None = None,
        amount_fen: int | None = None,
    ) -> dict[str, Any]:
        """A valid event; optional fields are sometimes left to their default."""
        rng = self.rng
        event: dict[str, Any] = {
            "event_id": self.event_id(),
            "type": event_type,
            "ts": ts_ms,
            "user_id": self.user_ids[user],
            "brand_id": brand.brand_id,
        }
        if sku_id is not None:
            event["sku_id"] = sku_id
        elif rng.random() < 0.1:
            event["sku_id"] = None  # null is the same as absent
        if channel != "other" or rng.random() < 0.5:
            event["channel"] = channel
        if room_id is not None:
            event["room_id"] = room_id
        if rng.random() < 0.98:
            event["region"] = self.user_region[user]
        vip = self.user_vip[user]
        if vip or rng.random() < 0.7:
            event["vip"] = vip
        if qty is not None and (qty != 1 or rng.random() < 0.5):
            event["qty"] = qty
        if order_id is not None:
            event["order_id"] = order_id
        if amount_fen is not None:
            event["amount_fen"] = amount_fen
        if rng.random() < 0.03:
            # Unknown extra fields are ignored.
            event["coupon"] = rng.choice(("region-targeted", "88vip-extra", "store"))
        return event

    def arrival(self, ts_ms: int) -> int:
        """When a record of event time ts_ms reaches the broker."""
        if self.rng.random() < OUT_OF_ORDER_RATE:
            return ts_ms + self.rng.randrange(5_000, 240_000)
        return ts_ms + self.rng.randrange(800)

    def emit(self, event: dict[str, Any], arrival_ms: int) -> _Line:
        line = _Line(arrival_ms, len(self.lines), event=event)
        self.lines.append(line)
        return line

    def emit_text(self, text: str, arrival_ms: int) -> _Line:
        line = _Line(arrival_ms, len(self.lines), text=text)
        self.lines.append(line)
        return line

    def in_window(self, ts_ms: int) -> bool:
        return self.t0_ms <= ts_ms < self.end_ms

    def build_events(self) -> None:
        rng = self.rng
        window_clicks = 0
        room_clicks: list[str] = []
        order_lines: dict[str, _Line] = {}
        for order in self.orders:
            event = self.event(
                "order", order.ts_ms, order.user, order.brand, order.sku_id,
                order.channel, order.room_id, qty=order.qty,
                order_id=order.order_id, amount_fen=order.amount_fen,
            )  # fmt: skip
            order_lines[order.order_id] = self.emit(event, self.arrival(order.ts_ms))
            # The funnel: clicks, then an add to cart, then the order.
            cart_ts = order.ts_ms - rng.randrange(5_000, 360_000)
            steps: list[tuple[str, int]] = []
            if rng.random() < 0.9:
                steps.append(("cart", cart_ts))
            click_ts = cart_ts
            for _ in range(rng.choices((1, 2, 3), (3, 4, 3))[0]):
                click_ts -= rng.randrange(5_000, 600_000)
                steps.append(("click", click_ts))
            for event_type, ts_ms in steps:
                if ts_ms < self.rec_start_ms:
                    continue  # happened before the recording started
                qty = order.qty if event_type == "cart" else None
                funnel_event = self.event(
                    event_type, ts_ms, order.user, order.brand, order.sku_id,
                    order.channel, order.room_id, qty=qty,
                )  # fmt: skip
                self.emit(funnel_event, self.arrival(ts_ms))
                if event_type == "click" and self.in_window(ts_ms):
                    window_clicks += 1
                    if order.channel == "livestream" and ts_ms < self.first_hour_end_ms:
                        assert order.room_id is not None
                        room_clicks.append(order.room_id)

        window_orders = sum(1 for order in self.orders if self.in_window(order.ts_ms))
        target_clicks = round(
            window_orders / (CONVERSION_LAST_YEAR * CONVERSION_GROWTH)
        )
        if target_clicks < window_clicks:
            msg = f"funnel has {window_clicks} clicks, over the {target_clicks} planned"
            raise GenerationError(msg)
        # Browsing that does not convert, until the campaign window holds
        # exactly the planned number of clicks.
        while window_clicks < target_clicks:
            ts_ms = self.curve.sample(rng, self.rec_start_ms, self.rec_end_ms)
            event = self.browse("click", ts_ms)
            if self.in_window(ts_ms):
                window_clicks += 1
                if (
                    event.get("channel") == "livestream"
                    and ts_ms < self.first_hour_end_ms
                ):
                    room_clicks.append(event["room_id"])
        for _ in range(len(self.orders) // 2):
            self.browse(
                "cart", self.curve.sample(rng, self.rec_start_ms, self.rec_end_ms)
            )

        self.stats.window_orders = window_orders
        self.stats.window_clicks = window_clicks
        self.stats.room_clicks = len(room_clicks)
        self.stats.rooms = len(set(room_clicks))
        self.stats.flash_sale_orders = sum(
            1
            for order in self.orders
            if order.channel == "flash_sale" and self.in_window(order.ts_ms)
        )
        self.build_cancels(order_lines)

    def browse(self, event_type: str, ts_ms: int) -> dict[str, Any]:
        rng = self.rng
        brand = self.brands[
            bisect.bisect_right(
                self.brand_cumweights, rng.random() * self.brand_cumweights[-1]
            )
        ]
        channel, room_id = self.channel_and_room(brand, BROWSE_CHANNEL_WEIGHTS)
        sku_id = (
            rng.choices(brand.skus, brand.sku_weights)[0][0]
            if rng.random() < 0.9
            else None
        )
        qty = rng.choices((1, 2), (9, 1))[0] if event_type == "cart" else None
        user = rng.randrange(len(self.user_ids))
        event = self.event(
            event_type, ts_ms, user, brand, sku_id, channel, room_id, qty=qty
        )
        self.emit(event, self.arrival(ts_ms))
        return event

    def build_cancels(self, order_lines: dict[str, _Line]) -> None:
        """Cancels: some arrive before their order, some are sent twice."""
        rng = self.rng
        for order in self.orders:
            if rng.random() >= CANCEL_RATE:
                continue
            first = rng.random() < CANCEL_FIRST_RATE
            delay_ms = (
                rng.randrange(5_000, 90_000)
                if first
                else rng.randrange(30_000, 1_800_000)
            )
            ts_ms = order.ts_ms + delay_ms
            if ts_ms >= self.rec_end_ms:
                continue
            partial = rng.random() < 0.2
            amount_fen = (
                order.amount_fen * rng.randint(2, 9) // 10
                if partial
                else order.amount_fen
            )
            event = self.event(
                "cancel", ts_ms, order.user, order.brand, order.sku_id,
                order.channel, order.room_id, qty=order.qty,
                order_id=order.order_id, amount_fen=amount_fen,
            )  # fmt: skip
            line = self.emit(event, ts_ms + rng.randrange(800))
            if first:
                # The order is held up (a slow partition) and lands after it.
                order_lines[order.order_id].arrival_ms = (
                    line.arrival_ms + rng.randrange(1_000, 60_000)
                )
            if rng.random() < CANCEL_TWICE_RATE:
                again = dict(event)
                if rng.random() < 0.5:
                    again["event_id"] = self.event_id()
                self.emit(again, line.arrival_ms + rng.randrange(1_000, 120_000))

    def add_duplicates(self) -> None:
        """Producer retries and re-sent orders, after the originals."""
        rng = self.rng
        originals = list(self.lines)
        for line in originals:
            event = line.event
            assert event is not None
            if rng.random() < DUPLICATE_RATE:
                self.emit(event, line.arrival_ms + rng.randrange(100, 90_000))
            if event["type"] == "order" and rng.random() < RESENT_ORDER_RATE:
                resent = dict(event)
                resent["event_id"] = self.event_id()
                self.emit(resent, line.arrival_ms + rng.randrange(1_000, 180_000))
        self.stats.valid_lines = len(self.lines)

    # ----------------------------------------------------------- malformed

    def template(self, event_type: str, channel: str | None = None) -> dict[str, Any]:
        """A fresh valid event to spoil."""
        rng = self.rng
        brand = self.brands[rng.randrange(len(self.brands))]
        channel_name, room_id = self.channel_and_room(brand, ORDER_CHANNEL_WEIGHTS)
        if channel is not None:
            channel_name = channel
            room_id = rng.choice(self.kol_rooms) if channel == "livestream" else None
        sku_id, price_fen = rng.choices(brand.skus, brand.sku_weights)[0]
        money = event_type in ("order", "cancel")
        event = self.event(
            event_type,
            self.curve.sample(rng, self.t0_ms, self.end_ms),
            rng.randrange(len(self.user_ids)),
            brand,
            sku_id,
            channel_name,
            room_id,
            qty=1 if event_type in ("cart", "order", "cancel") else None,
            order_id=self.order_id() if money else None,
            amount_fen=price_fen if money else None,
        )
        event.pop("coupon", None)
        return event

    def add_malformed(self) -> None:
        rng = self.rng
        catalogue = malformed_catalogue()
        repeatable = [entry for entry in catalogue if entry[0] != "too_large"]
        count = max(len(catalogue), round(MALFORMED_RATE * len(self.lines)))
        chosen = list(catalogue) + [
            rng.choice(repeatable) for _ in range(count - len(catalogue))
        ]
        for reason, event_type, spoil in chosen:
            event = self.template(event_type)
            if spoil is _spoil_room_id_missing or spoil is _spoil_room_id_wrong:
                event = self.template(event_type, channel="livestream")
            topic = TOPIC_OF_TYPE[event_type]
            topic, payload = spoil(event, topic)
            text = self.render_malformed(topic, payload)
            record = _published(text)
            got = reference.validate(
                record[0], record[2], reference.DEFAULT_MAX_RECORD_BYTES
            )
            if got != reason:
                msg = f"malformed record meant as {reason} reads as {got}: {text[:200]}"
                raise GenerationError(msg)
            self.emit_text(text, rng.randrange(self.rec_start_ms, self.rec_end_ms))
            self.stats.malformed_by_reason[reason] += 1

    def render_malformed(self, topic: str, payload: Payload) -> str:
        """The recording line for a spoiled record: a plain line when it can be
        one (an object routed by its own type), else an envelope."""
        kind, content = payload
        key = self.user_ids[self.rng.randrange(len(self.user_ids))]
        if kind == "value":
            routable = (
                isinstance(content, dict)
                and topic_of_type(content.get("type")) == topic
                and not is_envelope(content)
            )
            if routable:
                return _compact(content)
            return _compact({"topic": topic, "key": key, "value": content})
        if kind == "raw":
            return _compact({"topic": topic, "key": key, "raw": content})
        assert isinstance(content, bytes)
        encoded = base64.b64encode(content).decode("ascii")
        return _compact({"topic": topic, "key": None, "raw_b64": encoded})

    # ------------------------------------------------------------ baseline

    def build_baseline(self) -> None:
        """Last year's first-hour GMV per brand, set so that exactly
        `--doubled` brands have first-hour gross >= 2x a baseline >= floor."""
        rng = self.rng
        floor_fen = self.money.yoy_min_baseline_fen
        gross: dict[str, int] = {brand.brand_id: 0 for brand in self.brands}
        for order in self.orders:
            if self.t0_ms <= order.ts_ms < self.first_hour_end_ms:
                gross[order.brand.brand_id] += order.amount_fen
        self.stats.first_hour_gross_fen = gross
        eligible = [
            b.brand_id for b in self.brands if gross[b.brand_id] >= 2 * floor_fen
        ]
        if self.options.doubled > len(eligible):
            msg = (
                f"--doubled {self.options.doubled}: only {len(eligible)} brands reach"
                f" twice the floor ({2 * floor_fen} fen); raise --scale or --brands"
            )
            raise GenerationError(msg)
        doubled = set(rng.sample(eligible, self.options.doubled))
        self.stats.doubled = sorted(doubled)
        for brand in self.brands:
            brand_gross = gross[brand.brand_id]
            if brand.brand_id in doubled:
                # gross // r <= gross / 2 for r >= 2, and floor <= gross / 2.
                baseline = max(floor_fen, int(brand_gross / rng.uniform(2.0, 6.0)))
                baseline = min(baseline, brand_gross // 2)
            else:
                roll = rng.random()
                if roll < 0.12:
                    continue  # a new brand: no baseline
                if roll < 0.22 and floor_fen > 1:
                    baseline = rng.randint(1, floor_fen - 1)  # too small to count
                elif brand_gross == 0:
                    baseline = rng.randint(floor_fen, 3 * floor_fen)
                else:
                    # 2 * baseline > gross: grew less than 2x, or shrank.
                    baseline = max(
                        floor_fen, math.ceil(brand_gross / rng.uniform(0.5, 1.95))
                    )
                    baseline = max(baseline, brand_gross // 2 + 1)
            self.baseline_fen[brand.brand_id] = baseline
        # Brands that sold last year and are absent this year.
        for number in self.spare_brand_numbers[: max(3, len(self.brands) // 50)]:
            brand_id = f"b{number:0{self.brand_id_width}d}"
            self.baseline_fen[brand_id] = rng.randint(floor_fen, 20 * floor_fen)

    def build_lastyear(self) -> None:
        stats = self.stats
        per_room = stats.room_clicks / stats.rooms if stats.rooms else 0.0
        self.lastyear = {
            "campaign_id": "d11-2024",
            "first_hour_livestream_clicks_per_room": round(
                per_room / LIVESTREAM_ROOM_GROWTH, 2
            ),
            "campaign_flash_sale_orders": int(
                stats.flash_sale_orders / FLASH_SALE_GROWTH
            ),
            "campaign_conversion": CONVERSION_LAST_YEAR,
            "definitions": {
                "first_hour_livestream_clicks_per_room": (
                    "counted livestream clicks with ts in the first hour, over the"
                    " distinct room_ids they name"
                ),
                "campaign_flash_sale_orders": (
                    "counted orders with channel flash_sale in the campaign window"
                ),
                "campaign_conversion": (
                    "counted orders / counted clicks in the campaign window"
                ),
            },
        }

    # -------------------------------------------------------------- output

    def generate(self) -> None:
        self.build_brands()
        self.build_orders()
        self.build_users(2 * len(self.orders) + 500)
        self.assign_buyers()
        self.build_events()
        self.add_duplicates()
        self.add_malformed()
        self.build_baseline()
        self.build_lastyear()

    def recording_lines(self) -> list[str]:
        ordered = sorted(self.lines, key=lambda line: (line.arrival_ms, line.seq))
        rendered = []
        for line in ordered:
            if line.text is not None:
                rendered.append(line.text)
            else:
                rendered.append(_compact(line.event))
        return rendered

    def settings(self, companions: Companions) -> dict[str, str]:
        campaign_id = self.options.campaign_id or f"d11-2025-{companions.name}"
        return {
            "PRESALE_CAMPAIGN_ID": campaign_id,
            "PRESALE_CAMPAIGN_START_MS": str(self.t0_ms),
            "PRESALE_CAMPAIGN_END_MS": str(self.end_ms),
            "PRESALE_MILESTONES_FEN": ",".join(
                str(t) for t in self.money.thresholds_fen
            ),
            "PRESALE_YOY_MIN_BASELINE_FEN": str(self.money.yoy_min_baseline_fen),
            "PRESALE_BASELINE_CSV": companions.baseline.name,
            "PRESALE_CHANNEL_BASELINE_CSV": companions.channels.name,
        }


# ------------------------------------------------------------------ malformed

Payload = tuple[str, Any]  # ("value", obj) | ("raw", text) | ("raw_b64", bytes)
# Spoils a valid event sent to a topic: -> (topic, payload) to record.
Spoil = Callable[[dict[str, Any], str], tuple[str, Payload]]


def _set(name: str, value: Any) -> Spoil:
    def spoil(event: dict[str, Any], topic: str) -> tuple[str, Payload]:
        event[name] = value
        return topic, ("value", event)

    return spoil


def _drop(name: str) -> Spoil:
    def spoil(event: dict[str, Any], topic: str) -> tuple[str, Payload]:
        event.pop(name, None)
        return topic, ("value", event)

    return spoil


def _to_topic(other: str) -> Spoil:
    def spoil(event: dict[str, Any], topic: str) -> tuple[str, Payload]:
        return other, ("value", event)

    return spoil


def _raw(make_text: Any) -> Spoil:
    def spoil(event: dict[str, Any], topic: str) -> tuple[str, Payload]:
        return topic, ("raw", make_text(event))

    return spoil


def _bytes(make_bytes: Any) -> Spoil:
    def spoil(event: dict[str, Any], topic: str) -> tuple[str, Payload]:
        return topic, ("raw_b64", make_bytes(event))

    return spoil


def _as_value(value: Any) -> Spoil:
    def spoil(event: dict[str, Any], topic: str) -> tuple[str, Payload]:
        return topic, ("value", value(event) if callable(value) else value)

    return spoil


def _inject_bytes(event: dict[str, Any], field_name: str, junk: bytes) -> bytes:
    """The event's JSON with `junk` bytes inside one string field."""
    marker = "\u2063"  # invisible separator, replaced by the junk bytes
    event[field_name] = f"{event.get(field_name) or 'CN-ZJ'}{marker}"
    return _compact(event).encode("utf-8").replace(marker.encode("utf-8"), junk)


def _replace_number(event: dict[str, Any], field_name: str, text: str) -> str:
    """The event's JSON with a field's number replaced by literal `text`."""
    event[field_name] = 0
    rendered = _compact(event)
    needle = f'"{field_name}":0'
    assert needle in rendered
    return rendered.replace(needle, f'"{field_name}":{text}', 1)


def _spoil_room_id_missing(event: dict[str, Any], topic: str) -> tuple[str, Payload]:
    event.pop("room_id", None)
    return topic, ("value", event)


def _spoil_room_id_wrong(event: dict[str, Any], topic: str) -> tuple[str, Payload]:
    event["room_id"] = {"id": event["room_id"]}
    return topic, ("value", event)


def _padded(event: dict[str, Any]) -> dict[str, Any]:
    event["note"] = "x" * TOO_LARGE_BYTES
    return event


def malformed_catalogue() -> list[tuple[str, str, Spoil]]:
    """(reason, event type, spoil) for every defect the generator injects; each
    spoils one valid event in exactly one way."""
    return [
        # 1. too_large: only these two (70 kB each, so the file stays small).
        ("too_large", "click", _as_value(_padded)),
        ("too_large", "order", _raw(lambda e: _compact(_padded(e)))),
        # 2. invalid_utf8
        (
            "invalid_utf8",
            "click",
            _bytes(lambda e: _inject_bytes(e, "user_id", b"\xff")),
        ),
        (
            "invalid_utf8",
            "cart",
            _bytes(lambda e: _inject_bytes(e, "brand_id", b"\xe4\xb8")),
        ),
        (
            "invalid_utf8",
            "order",
            _bytes(lambda e: _inject_bytes(e, "sku_id", b"\xc0\xaf")),
        ),
        (
            "invalid_utf8",
            "click",
            _bytes(lambda e: _inject_bytes(e, "region", b"\xed\xa0\x80")),
        ),
        (
            "invalid_utf8",
            "cancel",
            _bytes(lambda e: _inject_bytes(e, "user_id", b"caf\xe9")),
        ),
        # 3. invalid_json
        ("invalid_json", "click", _raw(lambda e: _compact(e)[:-9])),
        ("invalid_json", "order", _raw(lambda e: _compact(e)[:-1] + ",}")),
        ("invalid_json", "cart", _raw(lambda e: _compact(e).replace('"', "'"))),
        (
            "invalid_json",
            "order",
            _raw(lambda e: _replace_number(e, "amount_fen", "NaN")),
        ),
        ("invalid_json", "click", _raw(lambda e: _replace_number(e, "ts", "Infinity"))),
        (
            "invalid_json",
            "cancel",
            _raw(lambda e: _replace_number(e, "amount_fen", "-Infinity")),
        ),
        # Integers outside 64 bits read as floats (docs/validation.md).
        ("wrong_type", "click", _raw(lambda e: _replace_number(e, "ts", str(2**64)))),
        (
            "wrong_type",
            "order",
            _raw(lambda e: _replace_number(e, "amount_fen", str(-(2**63) - 1))),
        ),
        (
            "invalid_json",
            "click",
            _raw(
                lambda e: _compact(e).replace(
                    e["user_id"], "\\ud83d" + e["user_id"][1:], 1
                )
            ),
        ),
        ("invalid_json", "cart", _raw(lambda e: "")),
        ("invalid_json", "order", _raw(lambda e: "order placed, see log")),
        ("invalid_json", "click", _raw(lambda e: _compact(e) + _compact(e))),
        (
            "invalid_json",
            "cart",
            _raw(lambda e: _compact(e).replace('"event_id"', "event_id", 1)),
        ),
        # 4. not_object
        ("not_object", "click", _as_value(lambda e: [e])),
        ("not_object", "order", _as_value(lambda e: e["event_id"])),
        ("not_object", "cart", _as_value(42)),
        ("not_object", "click", _as_value(None)),
        ("not_object", "order", _as_value(True)),
        # 5. missing_field, in field order
        ("missing_field", "click", _drop("event_id")),
        ("missing_field", "cart", _set("event_id", None)),
        ("missing_field", "order", _drop("type")),
        ("missing_field", "click", _drop("ts")),
        ("missing_field", "cart", _set("user_id", None)),
        ("missing_field", "order", _drop("brand_id")),
        ("missing_field", "click", _spoil_room_id_missing),
        ("missing_field", "order", _drop("order_id")),
        ("missing_field", "cancel", _drop("amount_fen")),
        ("missing_field", "order", _set("amount_fen", None)),
        # 5. wrong_type
        ("wrong_type", "click", _set("event_id", 12345)),
        ("wrong_type", "order", _set("type", 1)),
        ("wrong_type", "click", lambda e, t: _set("ts", str(e["ts"]))(e, t)),
        ("wrong_type", "cart", _set("ts", True)),
        ("wrong_type", "order", lambda e, t: _set("ts", float(e["ts"]))(e, t)),
        ("wrong_type", "click", _set("user_id", 42)),
        ("wrong_type", "cart", lambda e, t: _set("brand_id", [e["brand_id"]])(e, t)),
        ("wrong_type", "order", _set("sku_id", 7)),
        ("wrong_type", "click", _set("channel", 3)),
        ("wrong_type", "click", _spoil_room_id_wrong),
        ("wrong_type", "cart", _set("region", 86)),
        ("wrong_type", "order", _set("vip", "true")),
        ("wrong_type", "click", _set("vip", 1)),
        ("wrong_type", "cart", _set("qty", "2")),
        ("wrong_type", "order", _set("qty", 2.0)),
        ("wrong_type", "cancel", _set("order_id", 123)),
        (
            "wrong_type",
            "order",
            lambda e, t: _set("amount_fen", str(e["amount_fen"]))(e, t),
        ),
        ("wrong_type", "order", _set("amount_fen", 99.5)),
        (
            "wrong_type",
            "cancel",
            lambda e, t: _set("amount_fen", float(e["amount_fen"]))(e, t),
        ),
        # 5. bad_value
        ("bad_value", "click", _set("event_id", "")),
        ("bad_value", "cart", _set("event_id", "e" * 129)),
        ("bad_value", "order", _set("type", "refund")),
        ("bad_value", "click", _set("ts", -1)),
        ("bad_value", "order", _set("ts", 2**53)),
        ("bad_value", "cart", _set("user_id", "")),
        ("bad_value", "click", _set("brand_id", "b" * 65)),
        ("bad_value", "order", _set("sku_id", "")),
        ("bad_value", "click", _set("channel", "tv")),
        ("bad_value", "cart", _set("channel", "Livestream")),
        ("bad_value", "click", _set("region", "")),
        ("bad_value", "cart", _set("region", "r" * 65)),
        ("bad_value", "click", _set("qty", 0)),
        ("bad_value", "order", _set("qty", 1_000_001)),
        ("bad_value", "cancel", _set("order_id", "")),
        ("bad_value", "order", _set("amount_fen", -1)),
        ("bad_value", "cancel", _set("amount_fen", 10**12 + 1)),
        ("bad_value", "order", _set("amount_fen", 2**64 - 1)),
        # 6. topic_mismatch
        ("topic_mismatch", "click", _to_topic("orders")),
        ("topic_mismatch", "cart", _to_topic("clicks")),
        ("topic_mismatch", "order", _to_topic("carts")),
        ("topic_mismatch", "cancel", _to_topic("clicks")),
    ]


def _published(text: str) -> tuple[str, bytes | None, bytes]:
    """What the replay publishes for one recording line."""
    record = parse_line(text.encode("utf-8"))
    assert record is not None
    return record


def _accumulate(values: Sequence[float]) -> list[float]:
    total = 0.0
    out = []
    for value in values:
        total += value
        out.append(total)
    return out


# --------------------------------------------------------------------- files


def write_recording(path: Path, lines: Sequence[str]) -> None:
    """Write lines; gzipped (with a fixed header) when the name ends in .gz."""
    data = "".join(f"{line}\n" for line in lines).encode("utf-8")
    if path.name.endswith(".gz"):
        with (
            open(path, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as stream,
        ):
            stream.write(data)
    else:
        path.write_bytes(data)


def write_baseline(path: Path, baseline_fen: dict[str, int]) -> None:
    rows = ["brand_id,first_hour_gmv_fen"]
    rows += [
        f"{brand_id},{baseline_fen[brand_id]}" for brand_id in sorted(baseline_fen)
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def channel_baseline(
    result: reference.Scan, campaign: reference.Campaign
) -> dict[str, tuple[int, int, int]]:
    """Last year's first hour per channel: this year's counted first-hour
    clicks, orders and gross GMV, each over its planned growth."""
    now: dict[str, list[int]] = {channel: [0, 0, 0] for channel in CHANNELS}
    for event in result.counted:
        if not campaign.start_ms <= event.ts_ms < campaign.first_hour_end_ms:
            continue
        row = now[event.channel]
        if event.type == "click":
            row[0] += 1
        elif event.type == "order":
            row[1] += 1
            row[2] += event.amount_fen or 0
    last_clicks = {
        channel: round(row[0] / CHANNEL_CLICKS_GROWTH.get(channel, OTHER_CLICKS_GROWTH))
        for channel, row in now.items()
    }
    # Orders last year: the named channels' from their growth, the rest shared
    # in proportion to this year's so that the total converts 1.15x better.
    last_orders = {
        channel: now[channel][1] / (growth * CONVERSION_GROWTH)
        for channel, growth in CHANNEL_CLICKS_GROWTH.items()
    }
    clicks_now = sum(row[0] for row in now.values())
    orders_now = sum(row[1] for row in now.values())
    total_last = (
        orders_now * sum(last_clicks.values()) / clicks_now / CONVERSION_GROWTH
        if clicks_now
        else 0.0
    )
    others = [channel for channel in now if channel not in CHANNEL_CLICKS_GROWTH]
    others_now = sum(now[channel][1] for channel in others)
    rest = max(total_last - sum(last_orders.values()), 0.0)
    for channel in others:
        last_orders[channel] = now[channel][1] * rest / others_now if others_now else 0
    rows = {}
    for channel, (_clicks, orders, gross_fen) in now.items():
        last = last_orders[channel]
        rows[channel] = (
            last_clicks[channel],
            round(last),
            round(gross_fen * last / orders) if orders else 0,
        )
    return rows


def write_channel_baseline(path: Path, rows: dict[str, tuple[int, int, int]]) -> None:
    lines = ["channel,first_hour_clicks,first_hour_orders,first_hour_gross_gmv_fen"]
    lines += [f"{channel},{c},{o},{g}" for channel, (c, o, g) in rows.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def dump_report(report: dict[str, Any]) -> str:
    """The expected report, one brand and one milestone per line (diffable)."""
    parts = []
    for name, value in report.items():
        if name in ("brands", "milestones") and value:
            items = ",\n".join(f"  {_compact(item)}" for item in value)
            parts.append(f'"{name}": [\n{items}\n ]')
        else:
            parts.append(f'"{name}": {_compact(value)}')
    return "{\n " + ",\n ".join(parts) + "\n}\n"


def check_report(world: World, report: dict[str, Any], facts: dict[str, Any]) -> None:
    """Fail loudly when the read-back report misses what was built in."""
    stats = world.stats
    problems = []
    top_key = str(world.money.top_threshold_fen)
    reached = report["first_hour"]["brands_reached"][top_key]
    if reached != world.options.top_brands:
        problems.append(f"{reached} brands reached {top_key} fen")
    if report["first_hour"]["brands_doubled"] != world.options.doubled:
        problems.append(f"{report['first_hour']['brands_doubled']} brands doubled")
    if report["dead_letters_by_reason"] != dict(
        sorted(stats.malformed_by_reason.items())
    ):
        problems.append(f"dead letters {report['dead_letters_by_reason']}")
    if facts["campaign_clicks"] != stats.window_clicks:
        problems.append(
            f"{facts['campaign_clicks']} clicks, {stats.window_clicks} planned"
        )
    if facts["campaign_orders"] != stats.window_orders:
        problems.append(
            f"{facts['campaign_orders']} orders, {stats.window_orders} planned"
        )
    if facts["first_hour_livestream_clicks"] != stats.room_clicks:
        problems.append("livestream clicks differ from the plan")
    if (facts["flagship_orders"], facts["flagship_vip_orders"]) != (
        stats.flagship_orders,
        stats.flagship_vip_orders,
    ):
        problems.append("flagship orders or vip orders differ from the plan")
    # The report itself (the brand's row, its vip_share) shows the plan.
    flagship_row = next(
        (row for row in report["brands"] if row["brand_id"] == FLAGSHIP_BRAND_ID),
        {"orders": 0, "vip_orders": 0},
    )
    if (flagship_row["orders"], flagship_row["vip_orders"]) != (
        stats.flagship_orders,
        stats.flagship_vip_orders,
    ):
        problems.append(f"brand {FLAGSHIP_BRAND_ID} vip orders differ from the plan")
    for row in report["brands"]:
        planned = stats.first_hour_gross_fen.get(row["brand_id"], 0)
        if row["first_hour_gross_gmv_fen"] != planned:
            problems.append(f"brand {row['brand_id']} first-hour gross differs")
            break
    if problems:
        raise GenerationError("; ".join(problems))


def generate(options: Options) -> dict[str, Any]:
    """Generate the recording and its companions; return the summary facts."""
    started = time.perf_counter()
    companions = Companions.beside(options.out)
    world = World(options)
    world.generate()
    options.out.parent.mkdir(parents=True, exist_ok=True)
    write_recording(companions.recording, world.recording_lines())
    write_baseline(companions.baseline, world.baseline_fen)
    settings = world.settings(companions)
    companions.lastyear.write_text(dump_json(world.lastyear), encoding="utf-8")

    # Read the written file back through the reference; last year's channels
    # from what it counted (the scan does not depend on them).
    folder = companions.settings.parent
    bare = {k: v for k, v in settings.items() if k != "PRESALE_CHANNEL_BASELINE_CSV"}
    result = reference.scan(
        companions.recording, reference.campaign_from_settings(bare, folder)
    )
    write_channel_baseline(
        companions.channels,
        channel_baseline(result, reference.campaign_from_settings(bare, folder)),
    )
    companions.settings.write_text(dump_json(settings), encoding="utf-8")
    campaign = reference.campaign_from_settings(settings, folder)
    report = reference.build_report(result, campaign)
    facts = reference.measure_facts(result, campaign)
    check_report(world, report, facts)
    companions.expected.write_text(dump_report(report), encoding="utf-8")
    summary = summary_facts(
        companions.recording,
        report,
        facts,
        world.lastyear,
        result.records,
        options.scale,
    )
    summary["generation_seconds"] = round(time.perf_counter() - started, 2)
    return summary


# The recordings committed under seeds/streams/, and the options that made
# them: `python -m seeds.generate --committed` remakes them byte for byte.
STREAMS_DIR = Path(__file__).parent / "streams"
COMMITTED_RECORDINGS: dict[str, list[str]] = {
    # ~20k records, 200 brands: fast tests.
    "small": [
        "--seed",
        "11",
        "--brands",
        "200",
        "--doubled",
        "60",
        "--scale",
        "0.00003",
    ],
    # The calibrated first hour: 5,000 brands, 35 over the scaled ¥100M,
    # 1,802 doubled, at the default scale 0.0001 (¥100M -> ¥10k).
    "first-hour": ["--seed", "2025"],
}


def committed_argv(name: str, folder: Path = STREAMS_DIR) -> list[str]:
    """The generator arguments that write committed recording `name`."""
    return [*COMMITTED_RECORDINGS[name], "--out", str(folder / f"{name}.jsonl.gz")]


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="presale seeds generate",
        description="Write a deterministic presale recording and its companion files.",
    )
    parser.add_argument("--out", type=Path, help="<name>.jsonl.gz to write")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument(
        "--scale",
        type=float,
        default=DEFAULT_SCALE,
        help="money scale: thresholds are ¥10M and ¥100M times this"
        f" (default {DEFAULT_SCALE})",
    )
    parser.add_argument("--brands", type=int, default=5_000)
    parser.add_argument(
        "--top-brands", type=int, default=35, help="brands over the scaled ¥100M"
    )
    parser.add_argument("--doubled", type=int, default=1_802, help="brands doubled YoY")
    parser.add_argument("--t0-ms", type=int, default=T0_MS, help="presale start")
    parser.add_argument("--campaign-minutes", type=int, default=120)
    parser.add_argument("--campaign-id", default=None)
    parser.add_argument("--summary", action="store_true", help="print measured facts")
    parser.add_argument(
        "--committed",
        action="store_true",
        help="remake every recording committed under seeds/streams/",
    )
    args = parser.parse_args(argv)
    if args.out is None:
        parser.error("--out is required")
    if args.scale <= 0:
        parser.error("--scale must be positive")
    if args.campaign_minutes < 60:
        parser.error("--campaign-minutes must cover the first hour")
    return Options(
        out=args.out,
        seed=args.seed,
        scale=args.scale,
        brands=args.brands,
        top_brands=args.top_brands,
        doubled=args.doubled,
        t0_ms=args.t0_ms,
        campaign_minutes=args.campaign_minutes,
        campaign_id=args.campaign_id,
        summary=args.summary,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["generate"]:
        # `presale seeds generate ...` may hand over its subcommand word too.
        args = args[1:]
    if "--committed" in args:
        args.remove("--committed")
        for name in COMMITTED_RECORDINGS:
            status = main([*committed_argv(name), *args])
            if status != 0:
                return status
        return 0
    options = parse_args(args)
    try:
        summary = generate(options)
    except GenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if options.summary:
        print(format_summary(summary))
    else:
        print(
            f"wrote {options.out} ({summary['records']:,} records,"
            f" {summary['generation_seconds']} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
