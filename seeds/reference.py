"""Independent batch reference: a recording + settings -> the expected report.

Plain, obviously-correct Python (dicts, sets, exact distinct counts). It shares
nothing with the stream path but the contract (docs/validation.md and
CONTRACT sections 2, 3, 4 and 7), so a disagreement between the two is a bug in
one of them, never a shared one.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import unicodedata
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.recordings import iter_records

HOUR_MS = 3_600_000
# Default thresholds of CONTRACT section 4: ¥10M and ¥100M.
DEFAULT_MILESTONES_FEN = (1_000_000_000, 10_000_000_000)
# The worker's defaults (CONTRACT section 8), so a recording without them in its
# settings is expected as the worker counts it.
DEFAULT_YOY_MIN_BASELINE_FEN = 1_000_000
DEFAULT_DEDUPE_HORIZON_MS = 86_400_000
# The event-time watermark: the median of the latest 64 counted event times,
# once there are 32, never moving back (CONTRACT section 3: it follows the bulk
# of the stream, so a clock ahead in the first records cannot move it).
WATERMARK_WINDOW = 64
WATERMARK_MIN_EVENTS = 32
# docs/validation.md check 1.
DEFAULT_MAX_RECORD_BYTES = 65_536
# CONTRACT section 3: regions kept apart per campaign; later new ones are `other`.
DEFAULT_MAX_REGIONS = 64
# CONTRACT section 7: the report lists the latest 60 minutes by default.
DEFAULT_MINUTES = 60

REASONS: tuple[str, ...] = (
    "too_large",
    "invalid_utf8",
    "invalid_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "bad_value",
    "topic_mismatch",
)
TYPES: tuple[str, ...] = ("click", "cart", "order", "cancel")
CHANNELS: tuple[str, ...] = (
    "search",
    "recommend",
    "livestream",
    "flash_sale",
    "store",
    "detail",
    "other",
)
TOPIC_TYPES: dict[str, tuple[str, ...]] = {
    "clicks": ("click",),
    "carts": ("cart",),
    "orders": ("order", "cancel"),
}
COUNTER_FIELDS: tuple[str, ...] = (
    "clicks",
    "carts",
    "orders",
    "cancels",
    "units",
    "gross_gmv_fen",
    "net_gmv_fen",
    "vip_orders",
    "buyers",
    "first_hour_gross_gmv_fen",
)

INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1
TS_MAX = 2**53 - 1
QTY_MAX = 1_000_000
AMOUNT_MAX_FEN = 10**12


# --------------------------------------------------------------------------
# Validation (docs/validation.md)


@dataclass(frozen=True, slots=True)
class Event:
    """A valid input event with its defaults applied."""

    event_id: str
    type: str
    ts_ms: int
    user_id: str
    brand_id: str
    sku_id: str | None
    channel: str
    room_id: str | None
    region: str
    vip: bool
    qty: int
    order_id: str | None
    amount_fen: int | None


class _BadJson(ValueError):
    """A JSON text that the contract does not accept (NaN, 1e400, lone surrogates)."""


def _reject_constant(name: str) -> Any:
    raise _BadJson(f"{name} is not JSON")


def _parse_int(text: str) -> int | float:
    """An integer outside 64 bits is read as a float (docs/validation.md), so it
    is wrong_type in an integer field and ignored in an unknown one."""
    number = int(text)
    if not INT64_MIN <= number <= UINT64_MAX:
        return _parse_float(text)
    return number


def _parse_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _BadJson(f"number {text[:40]} is not finite")
    return number


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _string_check(value: object, max_chars: int, nfkc: bool = False) -> str | None:
    """Reason for a string field with 1..max_chars characters, or None.

    No character of Unicode category Cc (controls) or Cf (format: zero-width,
    bidi); the limit counts the NFKC form where the field is normalised."""
    if not isinstance(value, str):
        return "wrong_type"
    if any(unicodedata.category(char) in ("Cc", "Cf") for char in value):
        return "bad_value"
    if nfkc:
        value = unicodedata.normalize("NFKC", value)
    if not 1 <= len(value) <= max_chars:
        return "bad_value"
    return None


def _nfkc(value: str | None) -> str | None:
    return None if value is None else unicodedata.normalize("NFKC", value)


def _int_check(value: object, low: int, high: int) -> str | None:
    if not _is_int(value):
        return "wrong_type"
    assert isinstance(value, int)
    if not low <= value <= high:
        return "bad_value"
    return None


def _enum_check(value: object, allowed: Iterable[str]) -> str | None:
    if not isinstance(value, str):
        return "wrong_type"
    if value not in allowed:
        return "bad_value"
    return None


def _bool_check(value: object) -> str | None:
    return None if isinstance(value, bool) else "wrong_type"


FieldCheck = Callable[[object], "str | None"]


def _field_checks(obj: Mapping[str, Any]) -> list[tuple[str, bool, FieldCheck]]:
    """(field, required, check) in the order of docs/validation.md."""
    is_money = obj.get("type") in ("order", "cancel")
    return [
        ("ts", True, lambda v: _int_check(v, 0, TS_MAX)),
        ("user_id", True, lambda v: _string_check(v, 128)),
        ("brand_id", True, lambda v: _string_check(v, 64, nfkc=True)),
        ("sku_id", False, lambda v: _string_check(v, 128)),
        ("channel", False, lambda v: _enum_check(v, CHANNELS)),
        (
            "room_id",
            obj.get("channel") == "livestream",
            lambda v: _string_check(v, 128, nfkc=True),
        ),
        ("region", False, lambda v: _string_check(v, 64, nfkc=True)),
        ("vip", False, _bool_check),
        ("qty", False, lambda v: _int_check(v, 1, QTY_MAX)),
        ("order_id", is_money, lambda v: _string_check(v, 128)),
        ("amount_fen", is_money, lambda v: _int_check(v, 0, AMOUNT_MAX_FEN)),
    ]


def _check(
    obj: Mapping[str, Any], name: str, required: bool, check: FieldCheck
) -> str | None:
    if obj.get(name) is None:  # JSON null counts as absent
        return "missing_field" if required else None
    return check(obj[name])


def _field_reason(obj: Mapping[str, Any], topic: str) -> str | None:
    """The first failing field check, in the order of docs/validation.md."""
    reason = _check(obj, "event_id", True, lambda v: _string_check(v, 128))
    if reason is None:
        reason = _check(obj, "type", True, lambda v: _enum_check(v, TYPES))
    if reason is not None:
        return reason
    # `type` is valid: does this topic carry it? Checked right after `type`.
    if obj["type"] not in TOPIC_TYPES[topic]:
        return "topic_mismatch"
    for name, required, check in _field_checks(obj):
        reason = _check(obj, name, required, check)
        if reason is not None:
            return reason
    return None


def validate(topic: str, value: bytes, max_record_bytes: int) -> Event | str:
    """Bytes from `topic` -> the valid Event, or the dead-letter reason code."""
    if len(value) > max_record_bytes:
        return "too_large"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    try:
        obj = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
        )
    except (ValueError, RecursionError):  # JSONDecodeError and _BadJson
        return "invalid_json"
    if _has_lone_surrogate(obj):
        return "invalid_json"
    if not isinstance(obj, dict):
        return "not_object"
    reason = _field_reason(obj, topic)
    if reason is not None:
        return reason
    return Event(
        event_id=obj["event_id"],
        type=obj["type"],
        ts_ms=obj["ts"],
        user_id=obj["user_id"],
        brand_id=unicodedata.normalize("NFKC", obj["brand_id"]),
        sku_id=obj.get("sku_id"),
        channel=obj.get("channel") or "other",
        room_id=_nfkc(obj.get("room_id")),
        region=_nfkc(obj.get("region")) or "unknown",
        vip=obj.get("vip") or False,
        qty=obj["qty"] if obj.get("qty") is not None else 1,
        order_id=obj.get("order_id"),
        amount_fen=obj.get("amount_fen"),
    )


# --------------------------------------------------------------------------
# Settings


@dataclass(frozen=True, slots=True)
class Campaign:
    """The settings the report depends on, parsed from the env-var mapping."""

    campaign_id: str
    start_ms: int
    end_ms: int
    milestones_fen: tuple[int, ...]
    yoy_min_baseline_fen: int
    baseline_fen: dict[str, int] = field(default_factory=dict)
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    dedupe_horizon_ms: int = DEFAULT_DEDUPE_HORIZON_MS
    max_regions: int = DEFAULT_MAX_REGIONS
    # channel -> last year's first hour {"clicks", "orders", "gross_gmv_fen"}
    channel_baseline: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def first_hour_end_ms(self) -> int:
        return self.start_ms + HOUR_MS


def read_baseline_csv(path: str | Path) -> dict[str, int]:
    """`brand_id,first_hour_gmv_fen` CSV (header line included) -> dict."""
    baseline: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            baseline[row["brand_id"]] = int(row["first_hour_gmv_fen"])
    return baseline


def read_channel_baseline_csv(path: str | Path) -> dict[str, dict[str, int]]:
    """`channel,first_hour_clicks,first_hour_orders,first_hour_gross_gmv_fen`
    CSV (header line included) -> {channel: {clicks, orders, gross_gmv_fen}}."""
    baseline: dict[str, dict[str, int]] = {}
    with open(path, newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            baseline[row["channel"]] = {
                "clicks": int(row["first_hour_clicks"]),
                "orders": int(row["first_hour_orders"]),
                "gross_gmv_fen": int(row["first_hour_gross_gmv_fen"]),
            }
    return baseline


def _resolve(value: Any, base_dir: str | Path | None) -> Path:
    path = Path(str(value))
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    return path


def campaign_from_settings(
    settings: Mapping[str, Any], base_dir: str | Path | None = None
) -> Campaign:
    """Env-var mapping (values str or int) -> Campaign.

    A relative PRESALE_BASELINE_CSV is resolved against `base_dir` (the
    settings file's directory) when given, else the current directory.
    """
    milestones = str(settings.get("PRESALE_MILESTONES_FEN", "")).strip()
    thresholds = (
        tuple(int(part) for part in milestones.split(",") if part.strip())
        if milestones
        else DEFAULT_MILESTONES_FEN
    )
    baseline: dict[str, int] = {}
    csv_path = settings.get("PRESALE_BASELINE_CSV")
    if csv_path:
        path = Path(str(csv_path))
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        baseline = read_baseline_csv(path)
    channel_csv = settings.get("PRESALE_CHANNEL_BASELINE_CSV")
    channel_baseline = (
        read_channel_baseline_csv(_resolve(channel_csv, base_dir))
        if channel_csv
        else {}
    )
    return Campaign(
        campaign_id=str(settings["PRESALE_CAMPAIGN_ID"]),
        start_ms=int(settings["PRESALE_CAMPAIGN_START_MS"]),
        end_ms=int(settings["PRESALE_CAMPAIGN_END_MS"]),
        milestones_fen=tuple(sorted(set(thresholds))),
        yoy_min_baseline_fen=int(
            settings.get("PRESALE_YOY_MIN_BASELINE_FEN", DEFAULT_YOY_MIN_BASELINE_FEN)
        ),
        baseline_fen=baseline,
        max_record_bytes=int(
            settings.get("PRESALE_MAX_RECORD_BYTES", DEFAULT_MAX_RECORD_BYTES)
        ),
        dedupe_horizon_ms=int(
            settings.get("PRESALE_DEDUPE_HORIZON_MS", DEFAULT_DEDUPE_HORIZON_MS)
        ),
        max_regions=int(settings.get("PRESALE_MAX_REGIONS", DEFAULT_MAX_REGIONS)),
        channel_baseline=channel_baseline,
    )


def load_settings(path: str | Path) -> dict[str, str]:
    """Read a `<name>.settings.json` file (a mapping of env vars to values)."""
    with open(path, encoding="utf-8") as stream:
        settings = json.load(stream)
    return {str(name): str(value) for name, value in settings.items()}


# --------------------------------------------------------------------------
# Scan: validation, window filter, dedupe


@dataclass(slots=True)
class Scan:
    """What one pass over a recording keeps: the counted events, in arrival
    order, and the tallies of what was not counted."""

    counted: list[Event] = field(default_factory=list)
    records: int = 0
    dead_letters_by_reason: Counter[str] = field(default_factory=Counter)
    out_of_window: int = 0
    late: int = 0


def scan_records(
    records: Iterable[tuple[str, bytes | None, bytes]], campaign: Campaign
) -> Scan:
    """Validate, window-filter and dedupe records, in the order given.

    Orders and cancels are deduplicated for the whole campaign; a click or cart
    more than the dedupe horizon behind the watermark is late, and not counted.
    """
    result = Scan()
    seen_event_ids: dict[str, set[str]] = {"click": set(), "cart": set()}
    seen_order_ids: dict[str, set[str]] = {"order": set(), "cancel": set()}
    recent: deque[int] = deque(maxlen=WATERMARK_WINDOW)
    watermark_ms = 0
    for topic, _key, value in records:
        result.records += 1
        checked = validate(topic, value, campaign.max_record_bytes)
        if isinstance(checked, str):
            result.dead_letters_by_reason[checked] += 1
            continue
        event = checked
        if not campaign.start_ms <= event.ts_ms < campaign.end_ms:
            # Valid but outside the campaign: counted in a metric only, and it
            # takes no part in dedupe.
            result.out_of_window += 1
            continue
        recent.append(event.ts_ms)
        if len(recent) >= WATERMARK_MIN_EVENTS:
            median_ms = sorted(recent)[(len(recent) - 1) // 2]
            watermark_ms = max(watermark_ms, median_ms)
        if event.type in ("click", "cart"):
            if event.ts_ms < watermark_ms - campaign.dedupe_horizon_ms:
                result.late += 1
                continue
            seen = seen_event_ids[event.type]
            dedupe_key = event.event_id
        else:
            seen = seen_order_ids[event.type]
            assert event.order_id is not None
            dedupe_key = event.order_id
        if dedupe_key in seen:
            continue
        seen.add(dedupe_key)
        result.counted.append(event)
    return result


def scan(path: str | Path, campaign: Campaign) -> Scan:
    """Scan a recording file."""
    return scan_records(iter_records(path), campaign)


# --------------------------------------------------------------------------
# Report


class _Tally:
    """The 10 counters of one scope (a brand, a brand x channel, a channel...)."""

    def __init__(self) -> None:
        self.clicks = 0
        self.carts = 0
        self.orders = 0
        self.cancels = 0
        self.units = 0
        self.gross_gmv_fen = 0
        self.cancelled_fen = 0
        self.vip_orders = 0
        self.buyer_ids: set[str] = set()
        self.first_hour_gross_gmv_fen = 0

    def add(self, event: Event, campaign: Campaign) -> None:
        if event.type == "click":
            self.clicks += 1
        elif event.type == "cart":
            self.carts += 1
        elif event.type == "order":
            assert event.amount_fen is not None
            self.orders += 1
            self.units += event.qty
            self.gross_gmv_fen += event.amount_fen
            self.vip_orders += 1 if event.vip else 0
            self.buyer_ids.add(event.user_id)
            if campaign.start_ms <= event.ts_ms < campaign.first_hour_end_ms:
                self.first_hour_gross_gmv_fen += event.amount_fen
        else:
            assert event.amount_fen is not None
            self.cancels += 1
            self.cancelled_fen += event.amount_fen

    def as_dict(self) -> dict[str, int]:
        return {
            "clicks": self.clicks,
            "carts": self.carts,
            "orders": self.orders,
            "cancels": self.cancels,
            "units": self.units,
            "gross_gmv_fen": self.gross_gmv_fen,
            "net_gmv_fen": self.gross_gmv_fen - self.cancelled_fen,
            "vip_orders": self.vip_orders,
            "buyers": len(self.buyer_ids),
            "first_hour_gross_gmv_fen": self.first_hour_gross_gmv_fen,
        }


def milestones(
    first_hour_orders: Mapping[str, list[Event]], campaign: Campaign
) -> list[dict[str, Any]]:
    """Milestones reached by the brands' first-hour gross GMV (CONTRACT 4).

    `first_hour_orders` holds each brand's counted first-hour orders in arrival
    order; `crossed_at_ms` is the event time of the order whose running total
    first reached the threshold in that order (the processor's too, when it
    sees them in that order)."""
    found: list[dict[str, Any]] = []
    for brand_id, orders in first_hour_orders.items():
        targets = [("gmv_threshold", t) for t in campaign.milestones_fen]
        baseline_fen = campaign.baseline_fen.get(brand_id, 0)
        if baseline_fen > 0 and baseline_fen >= campaign.yoy_min_baseline_fen:
            targets.append(("yoy_double", 2 * baseline_fen))
        running_fen = 0
        for event in orders:
            assert event.amount_fen is not None
            before_fen, running_fen = running_fen, running_fen + event.amount_fen
            for kind, threshold_fen in targets:
                if before_fen < threshold_fen <= running_fen:
                    found.append(
                        {
                            "kind": kind,
                            "brand_id": brand_id,
                            "threshold_fen": threshold_fen,
                            "crossed_at_ms": event.ts_ms,
                        }
                    )
    found.sort(key=lambda m: (m["kind"], m["brand_id"], m["threshold_fen"]))
    return found


def _ratio(num: int, den: int) -> float | None:
    """CONTRACT 3b: a ratio rounded to 3 decimals; null when the base is 0."""
    if den == 0:
        return None
    return round(num / den, 3)


def _first_hour_block(
    events: list[Event], last_year: Mapping[str, int] | None
) -> dict[str, Any]:
    """One scope's counted first-hour events -> counts, conversion and the
    ratios to last year's first hour (CONTRACT 3b)."""
    clicks = sum(1 for e in events if e.type == "click")
    carts = sum(1 for e in events if e.type == "cart")
    orders = [e for e in events if e.type == "order"]
    gross_fen = sum(e.amount_fen or 0 for e in orders)
    last = last_year or {}
    last_clicks = last.get("clicks", 0)
    last_orders = last.get("orders", 0)
    last_gross = last.get("gross_gmv_fen", 0)
    # conversion against last year's: (orders / clicks) / (last orders / last
    # clicks) = (orders * last clicks) / (clicks * last orders)
    return {
        "clicks": clicks,
        "carts": carts,
        "orders": len(orders),
        "gross_gmv_fen": gross_fen,
        "conversion": _ratio(len(orders), clicks),
        "vs_last_year": {
            "clicks": _ratio(clicks, last_clicks),
            "orders": _ratio(len(orders), last_orders),
            "gross_gmv": _ratio(gross_fen, last_gross),
            "conversion": (
                _ratio(len(orders) * last_clicks, clicks * last_orders)
                if last_clicks > 0
                else None
            ),
        },
    }


def _regions(counted: list[Event], campaign: Campaign) -> dict[str, _Tally]:
    """Counted events by region: the first `max_regions` distinct regions in
    arrival order keep their own name, every later one counts as `other`."""
    kept: set[str] = set()
    tallies: dict[str, _Tally] = {}
    for event in counted:
        region = event.region
        if region not in kept and len(kept) < campaign.max_regions:
            kept.add(region)
        name = region if region in kept else "other"
        tallies.setdefault(name, _Tally()).add(event, campaign)
    return tallies


def _minutes(counted: list[Event], n: int) -> list[dict[str, int]]:
    """Clicks, orders and gross GMV per event-time minute of the counted
    events, the latest `n` minutes that have any, oldest first."""
    by_minute: dict[int, dict[str, int]] = {}
    for event in counted:
        start_ms = event.ts_ms - event.ts_ms % 60_000
        row = by_minute.setdefault(
            start_ms,
            {"minute_ms": start_ms, "clicks": 0, "orders": 0, "gross_gmv_fen": 0},
        )
        if event.type == "click":
            row["clicks"] += 1
        elif event.type == "order":
            row["orders"] += 1
            row["gross_gmv_fen"] += event.amount_fen or 0
    latest = sorted(by_minute)[-n:] if n > 0 else []
    return [by_minute[m] for m in latest]


def build_report(result: Scan, campaign: Campaign) -> dict[str, Any]:
    """The report of CONTRACT section 7, without the wall-clock fields
    (detected_at_ms, alerts, consumer_lag)."""
    totals = _Tally()
    by_channel: dict[str, _Tally] = {}
    by_brand: dict[str, _Tally] = {}
    by_brand_channel: dict[str, dict[str, _Tally]] = {}
    for event in result.counted:
        totals.add(event, campaign)
        by_channel.setdefault(event.channel, _Tally()).add(event, campaign)
        by_brand.setdefault(event.brand_id, _Tally()).add(event, campaign)
        brand_channels = by_brand_channel.setdefault(event.brand_id, {})
        brand_channels.setdefault(event.channel, _Tally()).add(event, campaign)

    brands: list[dict[str, Any]] = []
    for brand_id, tally in by_brand.items():
        row: dict[str, Any] = {"brand_id": brand_id, **tally.as_dict()}
        row["vip_share"] = _ratio(tally.vip_orders, tally.orders)
        row["baseline_first_hour_gmv_fen"] = campaign.baseline_fen.get(brand_id, 0)
        row["by_channel"] = {
            channel: by_brand_channel[brand_id][channel].as_dict()
            for channel in sorted(by_brand_channel[brand_id])
        }
        brands.append(row)
    brands.sort(key=lambda row: (-row["gross_gmv_fen"], row["brand_id"]))

    first_hour_fen = {
        brand_id: tally.first_hour_gross_gmv_fen for brand_id, tally in by_brand.items()
    }
    first_hour_orders: dict[str, list[Event]] = {}
    for event in result.counted:
        if (
            event.type == "order"
            and campaign.start_ms <= event.ts_ms < campaign.first_hour_end_ms
        ):
            first_hour_orders.setdefault(event.brand_id, []).append(event)
    found = milestones(first_hour_orders, campaign)
    brands_reached = {
        str(threshold_fen): sum(
            1 for gross_fen in first_hour_fen.values() if gross_fen >= threshold_fen
        )
        for threshold_fen in campaign.milestones_fen
    }
    brands_doubled = sum(1 for m in found if m["kind"] == "yoy_double")

    in_first_hour = [
        e
        for e in result.counted
        if campaign.start_ms <= e.ts_ms < campaign.first_hour_end_ms
    ]
    last_total = {
        name: sum(row[name] for row in campaign.channel_baseline.values())
        for name in ("clicks", "orders", "gross_gmv_fen")
    }
    regions = _regions(result.counted, campaign)

    return {
        "campaign": {
            "id": campaign.campaign_id,
            "start_ms": campaign.start_ms,
            "end_ms": campaign.end_ms,
            "first_hour_end_ms": campaign.first_hour_end_ms,
        },
        "totals": totals.as_dict(),
        "channels": {
            channel: {
                **by_channel[channel].as_dict(),
                "first_hour": _first_hour_block(
                    [e for e in in_first_hour if e.channel == channel],
                    campaign.channel_baseline.get(channel),
                ),
            }
            for channel in sorted(by_channel)
        },
        "first_hour": {
            "brands_reached": brands_reached,
            "brands_doubled": brands_doubled,
            **_first_hour_block(
                in_first_hour, last_total if campaign.channel_baseline else None
            ),
        },
        "regions": {name: regions[name].as_dict() for name in sorted(regions)},
        "minutes": _minutes(result.counted, DEFAULT_MINUTES),
        "brands": brands,
        "milestones": found,
        "dead_letters": sum(result.dead_letters_by_reason.values()),
        "dead_letters_by_reason": dict(sorted(result.dead_letters_by_reason.items())),
        "out_of_window": result.out_of_window,
        "late": result.late,
    }


def expected_report(
    path: str | Path,
    settings: Mapping[str, Any],
    *,
    settings_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Read a recording and compute the report the processor must reach.

    `settings` maps env-var names to values (a `<name>.settings.json`). A
    relative PRESALE_BASELINE_CSV is taken relative to `settings_dir`, or to
    the recording's directory when that is not given (the companion files of a
    recording sit beside it).
    """
    base_dir = settings_dir if settings_dir is not None else Path(path).parent
    campaign = campaign_from_settings(settings, base_dir)
    return build_report(scan(path, campaign), campaign)


# --------------------------------------------------------------------------
# Facts for the seed summary (SEED_FACTS.md), measured on a recording

FLAGSHIP_BRAND_ID = "apple"


def measure_facts(
    result: Scan,
    campaign: Campaign,
    flagship: str = FLAGSHIP_BRAND_ID,
) -> dict[str, Any]:
    """Funnel facts that the report does not carry, from counted events.

    - livestream room traffic: counted livestream clicks in the first hour,
      over the distinct rooms they name;
    - flash-sale orders: counted `flash_sale` orders in the campaign window;
    - conversion: counted orders / counted clicks in the campaign window;
    - flagship brand: its counted orders (all its skus), and how many vip:
      the `orders`, `vip_orders` and `vip_share` of its row in the report.
    """
    room_clicks = 0
    rooms: set[str] = set()
    flash_sale_orders = 0
    clicks = 0
    orders = 0
    flagship_orders = 0
    flagship_vip_orders = 0
    for event in result.counted:
        if event.type == "click":
            clicks += 1
            in_first_hour = event.ts_ms < campaign.first_hour_end_ms
            if event.channel == "livestream" and in_first_hour:
                room_clicks += 1
                assert event.room_id is not None
                rooms.add(event.room_id)
        elif event.type == "order":
            orders += 1
            if event.channel == "flash_sale":
                flash_sale_orders += 1
            if event.brand_id == flagship:
                flagship_orders += 1
                flagship_vip_orders += 1 if event.vip else 0
    return {
        "first_hour_livestream_clicks": room_clicks,
        "first_hour_livestream_rooms": len(rooms),
        "first_hour_livestream_clicks_per_room": room_clicks / len(rooms)
        if rooms
        else 0.0,
        "campaign_flash_sale_orders": flash_sale_orders,
        "campaign_clicks": clicks,
        "campaign_orders": orders,
        "campaign_conversion": orders / clicks if clicks else 0.0,
        "flagship_brand_id": flagship,
        "flagship_orders": flagship_orders,
        "flagship_vip_orders": flagship_vip_orders,
        "flagship_vip_share": flagship_vip_orders / flagship_orders
        if flagship_orders
        else 0.0,
    }


# --------------------------------------------------------------------------
# `presale expect` runs this in a process of its own (streams/ does not import
# seeds/): the report as JSON on stdout, or one line on stderr and exit 2.


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m seeds.reference")
    p.add_argument("--settings-json", required=True, help="{PRESALE_...: value}")
    p.add_argument("--settings-dir", default=None)
    p.add_argument("file")
    args = p.parse_args(argv)
    try:
        report = expected_report(
            args.file, json.loads(args.settings_json), settings_dir=args.settings_dir
        )
    except (OSError, EOFError) as exc:  # EOFError: a gzip cut short
        reason = getattr(exc, "strerror", None) or exc
        print(f"cannot read {args.file}: {reason}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a RecordingError names file and line
        print(str(exc), file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
