"""Presale events and their validation (CONTRACT section 2, docs/validation.md)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, cast

import msgspec
from msgspec import Meta
from msgspec.structs import replace

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


Kind = Literal["click", "cart", "order", "cancel"]
Channel = Literal[
    "search", "recommend", "livestream", "flash_sale", "store", "detail", "other"
]
_Text128 = Annotated[str, Meta(min_length=1, max_length=128)]
_Text64 = Annotated[str, Meta(min_length=1, max_length=64)]


class Event(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """One valid presale event, with its defaults filled in.

    A msgspec Struct: as immutable and typed as the house's frozen dataclass,
    and `EVENT_DECODER` turns a record's bytes into one, checking every field's
    type and range on the way, in a quarter of the time of orjson plus the
    checks in Python. The fields' constraints are the table's (CONTRACT
    section 2); what they cannot say (which types a topic carries, the fields a
    channel or an order requires) `fits` checks. Unknown fields, nulls and
    anything refused go to `validate`, which finds the exact reason: that
    decoder is only a fast path, and tests hold the two to the same answers.
    """

    event_id: _Text128
    type: Kind
    ts_ms: Annotated[int, Meta(ge=0, le=MAX_TS_MS)] = msgspec.field(name="ts")
    user_id: _Text128
    brand_id: _Text64
    channel: Channel = "other"
    room_id: _Text128 | None = None
    region: _Text64 = "unknown"
    vip: bool = False
    qty: Annotated[int, Meta(ge=1, le=MAX_QTY)] = 1
    order_id: _Text128 | None = None
    amount_fen: Annotated[int, Meta(ge=0, le=MAX_AMOUNT_FEN)] = 0
    sku_id: _Text128 | None = None


# Decodes only records whose fields are all known and all valid; raises
# ValueError (msgspec.DecodeError, UnicodeDecodeError) for anything else.
EVENT_DECODER: Final = msgspec.json.Decoder(Event)

# Unicode categories no producer string may hold (CONTRACT section 2): Cc, the
# controls (ESC starts the terminal sequence that clears a screen), and Cf, the
# format characters (U+200B zero-width space, U+202E right-to-left override).
FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf"})


def forbidden_character(text: str) -> str | None:
    """The first Cc or Cf character of `text`, or None when it has none."""
    # isprintable() is False for every Cc and Cf character (and for a few more
    # categories: Zs but the space, Zl, Zp, Co, Cn): one C pass clears nearly
    # every string, and only the rest is walked character by character.
    if text.isprintable():
        return None
    for char in text:
        if unicodedata.category(char) in FORBIDDEN_CATEGORIES:
            return char
    return None


def normal_id(text: str) -> str:
    """`brand_id`, `room_id` and `region` as counted: NFKC, so `Ａpple` is `Apple`.

    NFKC never maps a character to a Cc or Cf one (checked over every code point
    of Python 3.11's Unicode 14), so checking the string as sent is enough. It
    can change the length (U+FDFA becomes 18 characters; `e` + U+0301 becomes
    one), so the length limits apply to its result."""
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


# The text fields of an Event, each with its limit; `True` where it is normalised.
_TEXTS: Final = (
    ("event_id", 128, False),
    ("user_id", 128, False),
    ("brand_id", 64, True),
    ("sku_id", 128, False),
    ("room_id", 128, True),
    ("region", 64, True),
    ("order_id", 128, False),
)


def finish(event: Event) -> Event | None:
    """The text rules of a decoded event, for the fast path: None when a string
    holds a Cc or Cf character or a normalised id breaks its length limit (the
    exact path then names the reason), else the event with its ids normalised."""
    # Nearly every event is plain printable ASCII: no Cc or Cf character, and
    # NFKC leaves it as it is. One C pass over its strings joined clears it
    # (the field-by-field walk below cost about a microsecond an event).
    joined = "".join(
        (
            event.event_id,
            event.user_id,
            event.brand_id,
            event.sku_id or "",
            event.room_id or "",
            event.region or "",
            event.order_id or "",
        )
    )
    if joined.isascii() and joined.isprintable():
        return event
    changes: dict[str, str] = {}
    for name, max_len, normalised in _TEXTS:
        value = getattr(event, name)
        if value is None:
            continue
        if not value.isprintable() and forbidden_character(value) is not None:
            return None
        if normalised and not value.isascii():
            value = unicodedata.normalize("NFKC", value)
            if not 1 <= len(value) <= max_len:
                return None
            changes[name] = value
    return replace(event, **changes) if changes else event


def fits(event: Event, topic: str) -> bool:
    """The rules `EVENT_DECODER` cannot check. False sends the record to the
    exact path: so does an order or cancel of amount 0, which may be an
    absent `amount_fen` (the decoder's default), a missing field."""
    kind = event.type
    if kind not in TOPIC_TYPES[topic]:
        return False
    if event.room_id is None and event.channel == "livestream":
        return False
    if kind in (ORDER, CANCEL):
        return event.order_id is not None and event.amount_fen != 0
    return True


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
    obj: dict[str, Any],
    name: str,
    max_len: int,
    required: bool = False,
    normalised: bool = False,
) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise _Invalid(MISSING_FIELD, f"{name} is required")
        return None
    if type(value) is not str:
        raise _Invalid(WRONG_TYPE, f"{name} must be a string")
    char = forbidden_character(value)
    if char is not None:
        kind = unicodedata.category(char)
        detail = f"{name} holds U+{ord(char):04X}, a {kind} character"
        raise _Invalid(BAD_VALUE, detail)
    if normalised:
        value = normal_id(value)
    if not 1 <= len(value) <= max_len:
        after = " after NFKC" if normalised else ""
        raise _Invalid(BAD_VALUE, f"{name} must be 1-{max_len} characters{after}")
    return value


def _text(
    obj: dict[str, Any], name: str, max_len: int, normalised: bool = False
) -> str:
    value = _opt_text(obj, name, max_len, required=True, normalised=normalised)
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
    brand_id = _text(obj, "brand_id", 64, normalised=True)
    sku_id = _opt_text(obj, "sku_id", 128)
    channel = obj.get("channel")
    if channel is None:
        channel = "other"
    elif type(channel) is not str:
        raise _Invalid(WRONG_TYPE, "channel must be a string")
    elif channel not in CHANNEL_SET:
        raise _Invalid(BAD_VALUE, "channel is not a known channel")
    room_id = _opt_text(
        obj, "room_id", 128, required=channel == "livestream", normalised=True
    )
    region = _opt_text(obj, "region", 64, normalised=True)
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
        type=cast(Kind, kind),  # one of KINDS: checked above
        ts_ms=ts_ms,
        user_id=user_id,
        brand_id=brand_id,
        channel=cast(Channel, channel),  # one of CHANNELS: checked above
        room_id=room_id,
        region=region if region is not None else "unknown",
        vip=vip,
        qty=qty if qty is not None else 1,
        order_id=order_id,
        amount_fen=amount_fen if amount_fen is not None else 0,
        sku_id=sku_id,
    )


def validate(obj: Any, topic: str) -> Event | Rejection:
    """Check one decoded JSON value read from `topic` (a short topic name)."""
    if type(obj) is not dict:
        return Rejection(NOT_OBJECT, "the record is not a JSON object")
    try:
        return _fields(obj, topic)
    except _Invalid as exc:
        return Rejection(exc.reason, exc.detail)
