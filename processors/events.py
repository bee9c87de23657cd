"""Presale events and their validation (CONTRACT section 2, docs/validation.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeGuard

CLICK: Final = "click"
CART: Final = "cart"
ORDER: Final = "order"
CANCEL: Final = "cancel"
KINDS: Final = (CLICK, CART, ORDER, CANCEL)

# Topic short names (the part after the topic prefix) and the types each carries.
CLICKS: Final = "clicks"
CARTS: Final = "carts"
ORDERS: Final = "orders"
INPUT_TOPICS: Final = (CLICKS, CARTS, ORDERS)
TOPIC_TYPES: Final[dict[str, frozenset[str]]] = {
    CLICKS: frozenset({CLICK}),
    CARTS: frozenset({CART}),
    ORDERS: frozenset({ORDER, CANCEL}),
}

CHANNELS: Final = (
    "search",
    "recommend",
    "livestream",
    "flash_sale",
    "store",
    "detail",
    "other",
)
CHANNEL_SET: Final = frozenset(CHANNELS)

# Dead-letter reason codes; a bounded set, so they can label a Prometheus counter.
TOO_LARGE: Final = "too_large"
INVALID_UTF8: Final = "invalid_utf8"
INVALID_JSON: Final = "invalid_json"
NOT_OBJECT: Final = "not_object"
MISSING_FIELD: Final = "missing_field"
WRONG_TYPE: Final = "wrong_type"
BAD_VALUE: Final = "bad_value"
TOPIC_MISMATCH: Final = "topic_mismatch"
REASONS: Final = (
    TOO_LARGE,
    INVALID_UTF8,
    INVALID_JSON,
    NOT_OBJECT,
    MISSING_FIELD,
    WRONG_TYPE,
    BAD_VALUE,
    TOPIC_MISMATCH,
)

MAX_TS_MS: Final = 2**53 - 1  # JSON numbers stay exact below 2^53.
MAX_QTY: Final = 1_000_000
MAX_AMOUNT_FEN: Final = 10**12  # ¥10 billion: sums of a year stay far below 2^63.


class Event(NamedTuple):
    """One valid presale event, with its defaults filled in.

    A NamedTuple rather than the house's frozen dataclass: as immutable and as
    typed, and built in 0.3 µs instead of 1.0 µs, once per event at 100k/s.
    """

    event_id: str
    type: str
    ts_ms: int
    user_id: str
    brand_id: str
    channel: str = "other"
    room_id: str | None = None
    region: str = "unknown"
    vip: bool = False
    qty: int = 1
    order_id: str | None = None
    amount_fen: int = 0
    sku_id: str | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one record was refused; it goes to the dead-letter topic."""

    reason: str
    detail: str


class _Invalid(Exception):
    """Internal signal carrying a rejection out of the field checks."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _opt_text(
    obj: dict[str, Any], name: str, max_len: int, required: bool = False
) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise _Invalid(MISSING_FIELD, f"{name} is required")
        return None
    if type(value) is not str:
        raise _Invalid(WRONG_TYPE, f"{name} must be a string")
    if not 1 <= len(value) <= max_len:
        raise _Invalid(BAD_VALUE, f"{name} must be 1-{max_len} characters")
    return value


def _text(obj: dict[str, Any], name: str, max_len: int) -> str:
    value = _opt_text(obj, name, max_len, required=True)
    assert value is not None  # _opt_text raised when it was absent
    return value


def _integer(
    obj: dict[str, Any], name: str, low: int, high: int, required: bool
) -> int | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise _Invalid(MISSING_FIELD, f"{name} is required")
        return None
    if type(value) is not int:  # bool and float are not integers here
        raise _Invalid(WRONG_TYPE, f"{name} must be an integer")
    if not low <= value <= high:
        raise _Invalid(BAD_VALUE, f"{name} must be in [{low}, {high}]")
    return value


def _fields(obj: dict[str, Any], topic: str) -> Event:
    event_id = _text(obj, "event_id", 128)
    kind = obj.get("type")
    if kind is None:
        raise _Invalid(MISSING_FIELD, "type is required")
    if type(kind) is not str:
        raise _Invalid(WRONG_TYPE, "type must be a string")
    if kind not in KINDS:
        raise _Invalid(BAD_VALUE, "type must be click, cart, order or cancel")
    if kind not in TOPIC_TYPES[topic]:
        raise _Invalid(TOPIC_MISMATCH, f"type {kind} does not belong on {topic}")
    ts_ms = _integer(obj, "ts", 0, MAX_TS_MS, True)
    assert ts_ms is not None  # required: _integer raised when it was absent
    user_id = _text(obj, "user_id", 128)
    brand_id = _text(obj, "brand_id", 64)
    sku_id = _opt_text(obj, "sku_id", 128)
    channel = obj.get("channel")
    if channel is None:
        channel = "other"
    elif type(channel) is not str:
        raise _Invalid(WRONG_TYPE, "channel must be a string")
    elif channel not in CHANNEL_SET:
        raise _Invalid(BAD_VALUE, "channel is not a known channel")
    room_id = _opt_text(obj, "room_id", 128, required=channel == "livestream")
    region = _opt_text(obj, "region", 64)
    vip = obj.get("vip")
    if vip is None:
        vip = False
    elif type(vip) is not bool:
        raise _Invalid(WRONG_TYPE, "vip must be a boolean")
    qty = _integer(obj, "qty", 1, MAX_QTY, False)
    money = kind in (ORDER, CANCEL)
    order_id = _opt_text(obj, "order_id", 128, required=money)
    amount_fen = _integer(obj, "amount_fen", 0, MAX_AMOUNT_FEN, money)
    return Event(
        event_id=event_id,
        type=kind,
        ts_ms=ts_ms,
        user_id=user_id,
        brand_id=brand_id,
        channel=channel,
        room_id=room_id,
        region=region if region is not None else "unknown",
        vip=vip,
        qty=qty if qty is not None else 1,
        order_id=order_id,
        amount_fen=amount_fen if amount_fen is not None else 0,
        sku_id=sku_id,
    )


def _text_ok(value: object, max_len: int) -> TypeGuard[str]:
    return type(value) is str and 0 < len(value) <= max_len


def _fast(obj: dict[str, Any], topic: str) -> Event | None:
    """The same rules as `_fields` for a well-formed event, in one pass of cheap
    checks (about a third of the time); None sends the record to `_fields`, which
    finds the exact reason. Tests hold the two to the same answers."""
    g = obj.get
    kind = g("type")
    ts_ms = g("ts")
    event_id = g("event_id")
    user_id = g("user_id")
    brand_id = g("brand_id")
    if not (
        type(kind) is str
        and kind in TOPIC_TYPES[topic]
        and type(ts_ms) is int
        and 0 <= ts_ms <= MAX_TS_MS
        and _text_ok(event_id, 128)
        and _text_ok(user_id, 128)
        and _text_ok(brand_id, 64)
    ):
        return None
    channel = g("channel")
    room_id = g("room_id")
    if channel is None:
        channel = "other"
    elif type(channel) is not str or channel not in CHANNEL_SET:
        return None
    if room_id is None:
        if channel == "livestream":
            return None
    elif not _text_ok(room_id, 128):
        return None
    sku_id = g("sku_id")
    region = g("region")
    vip = g("vip")
    qty = g("qty")
    if (
        (sku_id is not None and not _text_ok(sku_id, 128))
        or (region is not None and not _text_ok(region, 64))
        or (vip is not None and type(vip) is not bool)
        or (qty is not None and not (type(qty) is int and 1 <= qty <= MAX_QTY))
    ):
        return None
    order_id = g("order_id")
    amount_fen = g("amount_fen")
    money = kind in (ORDER, CANCEL)
    if (money or order_id is not None) and not _text_ok(order_id, 128):
        return None
    if (money or amount_fen is not None) and not (
        type(amount_fen) is int and 0 <= amount_fen <= MAX_AMOUNT_FEN
    ):
        return None
    # tuple.__new__ directly: half the cost of Event(...)'s generated __new__.
    return _new_tuple(
        Event,
        (
            event_id,
            kind,
            ts_ms,
            user_id,
            brand_id,
            channel,
            room_id,
            "unknown" if region is None else region,
            bool(vip),
            1 if qty is None else qty,
            order_id,
            0 if amount_fen is None else amount_fen,
            sku_id,
        ),
    )


_new_tuple: Final = tuple.__new__


def validate(obj: Any, topic: str) -> Event | Rejection:
    """Check one decoded JSON value read from `topic` (a short topic name)."""
    if type(obj) is not dict:
        return Rejection(NOT_OBJECT, "the record is not a JSON object")
    event = _fast(obj, topic)
    if event is not None:
        return event
    try:
        return _fields(obj, topic)
    except _Invalid as exc:
        return Rejection(exc.reason, exc.detail)
