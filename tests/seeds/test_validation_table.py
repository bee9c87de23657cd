"""The reference's validation, one row per rule of docs/validation.md."""

from __future__ import annotations

import json
from typing import Any

import pytest

from seeds.reference import REASONS, Event, validate

MAX_BYTES = 65_536
DROP = object()  # an override that removes the field

BASE: dict[str, dict[str, Any]] = {
    "click": {"event_id": "e1", "type": "click", "ts": 1_000, "user_id": "u1",
              "brand_id": "b1"},
    "cart": {"event_id": "e1", "type": "cart", "ts": 1_000, "user_id": "u1",
             "brand_id": "b1"},
    "order": {"event_id": "e1", "type": "order", "ts": 1_000, "user_id": "u1",
              "brand_id": "b1", "order_id": "o1", "amount_fen": 100},
    "cancel": {"event_id": "e1", "type": "cancel", "ts": 1_000, "user_id": "u1",
               "brand_id": "b1", "order_id": "o1", "amount_fen": 100},
}  # fmt: skip
TOPIC = {"click": "clicks", "cart": "carts", "order": "orders", "cancel": "orders"}


def record(event_type: str = "click", **overrides: Any) -> bytes:
    """A valid event of this type, with fields replaced (or dropped)."""
    event = dict(BASE[event_type])
    for name, value in overrides.items():
        if value is DROP:
            event.pop(name, None)
        else:
            event[name] = value
    return json.dumps(event).encode()


def check(event_type: str, value: bytes, topic: str | None = None) -> str:
    result = validate(topic or TOPIC[event_type], value, MAX_BYTES)
    return "ok" if isinstance(result, Event) else result


ROWS: list[tuple[str, str, bytes, str | None, str]] = [
    # (id, event type, value, topic (None = the type's own), expected)
    ("valid click", "click", record(), None, "ok"),
    ("valid cart", "cart", record("cart"), None, "ok"),
    ("valid order", "order", record("order"), None, "ok"),
    ("valid cancel", "cancel", record("cancel"), None, "ok"),
    # 1. too_large, first of all checks
    ("65536 bytes", "click", b"", None, "ok"),  # filled in below
    ("65537 bytes", "click", b"", None, "too_large"),
    ("too large and not utf-8", "click", b"\xff" * 65_537, None, "too_large"),
    # 2. invalid_utf8
    ("0xff byte", "click", record(user_id="u").replace(b'"u"', b'"\xff"'), None,
     "invalid_utf8"),
    ("overlong slash", "click", b'{"a":"\xc0\xaf"}', None, "invalid_utf8"),
    ("utf-8 surrogate", "click", b'{"a":"\xed\xa0\x80"}', None, "invalid_utf8"),
    ("cut multibyte", "click", b'{"a":"\xe4\xb8"}', None, "invalid_utf8"),
    ("not utf-8 and not json", "click", b"\xff{", None, "invalid_utf8"),
    # 3. invalid_json
    ("empty", "click", b"", None, "invalid_json"),
    ("truncated", "click", record()[:-1], None, "invalid_json"),
    ("trailing comma", "click", record()[:-1] + b",}", None, "invalid_json"),
    ("two objects", "click", record() + record(), None, "invalid_json"),
    ("single quotes", "click", record().replace(b'"', b"'"), None, "invalid_json"),
    ("NaN", "order", record("order").replace(b"100", b"NaN"), None, "invalid_json"),
    ("Infinity", "click", record().replace(b"1000", b"Infinity"), None,
     "invalid_json"),
    ("-Infinity", "order", record("order").replace(b"100", b"-Infinity"), None,
     "invalid_json"),
    ("float overflow", "order", record("order").replace(b"100", b"1e400"), None,
     "invalid_json"),
    ("2**64 reads as a float", "click", record(ts=2**64), None, "wrong_type"),
    ("-2**63 - 1 reads as a float", "click", record(ts=-(2**63) - 1), None,
     "wrong_type"),
    ("lone surrogate", "click", record(user_id="\ud800"), None, "invalid_json"),
    ("lone low surrogate in a key", "click", b'{"\\udc00":1}', None, "invalid_json"),
    ("surrogate pair is fine", "click", record(user_id="\U0001f600"), None, "ok"),
    ("not json at all", "click", b"hello", None, "invalid_json"),
    # a number that fits 64 bits is JSON; its field check decides
    ("2**64 - 1 amount", "order", record("order", amount_fen=2**64 - 1), None,
     "bad_value"),
    ("-2**63 ts", "click", record(ts=-(2**63)), None, "bad_value"),
    # 4. not_object
    ("array", "click", b"[]", None, "not_object"),
    ("string", "click", b'"click"', None, "not_object"),
    ("number", "click", b"42", None, "not_object"),
    ("null", "click", b"null", None, "not_object"),
    ("true", "click", b"true", None, "not_object"),
    ("array of event", "click", b"[" + record() + b"]", None, "not_object"),
    # 5. missing_field (JSON null counts as absent)
    ("no event_id", "click", record(event_id=DROP), None, "missing_field"),
    ("null event_id", "click", record(event_id=None), None, "missing_field"),
    ("no type", "click", record(type=DROP), None, "missing_field"),
    ("no ts", "cart", record("cart", ts=DROP), None, "missing_field"),
    ("null user_id", "click", record(user_id=None), None, "missing_field"),
    ("no brand_id", "order", record("order", brand_id=DROP), None, "missing_field"),
    ("livestream, no room", "click", record(channel="livestream"), None,
     "missing_field"),
    ("livestream, null room", "click", record(channel="livestream", room_id=None),
     None, "missing_field"),
    ("order, no order_id", "order", record("order", order_id=DROP), None,
     "missing_field"),
    ("cancel, no amount", "cancel", record("cancel", amount_fen=DROP), None,
     "missing_field"),
    ("order, null amount", "order", record("order", amount_fen=None), None,
     "missing_field"),
    # optional fields may be absent or null
    ("nulls for optionals", "click",
     record(sku_id=None, channel=None, region=None, vip=None, qty=None,
            order_id=None, amount_fen=None, room_id=None), None, "ok"),
    ("click, no order fields", "click", record(), None, "ok"),
    # 5. wrong_type
    ("event_id number", "click", record(event_id=1), None, "wrong_type"),
    ("type number", "click", record(type=1), None, "wrong_type"),
    ("ts string", "click", record(ts="1000"), None, "wrong_type"),
    ("ts true", "click", record(ts=True), None, "wrong_type"),
    ("ts float", "click", record(ts=1000.0), None, "wrong_type"),
    ("user_id number", "click", record(user_id=1), None, "wrong_type"),
    ("brand_id list", "click", record(brand_id=["b1"]), None, "wrong_type"),
    ("sku_id number", "click", record(sku_id=7), None, "wrong_type"),
    ("channel number", "click", record(channel=3), None, "wrong_type"),
    ("room_id object", "click", record(channel="livestream", room_id={"id": "r"}),
     None, "wrong_type"),
    ("region number", "click", record(region=86), None, "wrong_type"),
    ("vip string", "click", record(vip="true"), None, "wrong_type"),
    ("vip int", "click", record(vip=1), None, "wrong_type"),
    ("qty string", "cart", record("cart", qty="2"), None, "wrong_type"),
    ("qty float", "cart", record("cart", qty=2.0), None, "wrong_type"),
    ("qty bool", "cart", record("cart", qty=True), None, "wrong_type"),
    ("order_id number", "order", record("order", order_id=1), None, "wrong_type"),
    ("amount 1.0", "order", record("order", amount_fen=1.0), None, "wrong_type"),
    ("amount 1.5", "order", record("order", amount_fen=1.5), None, "wrong_type"),
    ("amount string", "order", record("order", amount_fen="100"), None,
     "wrong_type"),
    ("amount false", "order", record("order", amount_fen=False), None,
     "wrong_type"),
    # 5. bad_value, at the edges of each range
    ("event_id empty", "click", record(event_id=""), None, "bad_value"),
    ("event_id 128", "click", record(event_id="e" * 128), None, "ok"),
    ("event_id 129", "click", record(event_id="e" * 129), None, "bad_value"),
    ("event_id 128 non-ascii", "click", record(event_id="张" * 128), None, "ok"),
    ("type refund", "order", record("order", type="refund"), None, "bad_value"),
    ("type Click", "click", record(type="Click"), None, "bad_value"),
    ("ts 0", "click", record(ts=0), None, "ok"),
    ("ts -1", "click", record(ts=-1), None, "bad_value"),
    ("ts 2**53-1", "click", record(ts=2**53 - 1), None, "ok"),
    ("ts 2**53", "click", record(ts=2**53), None, "bad_value"),
    ("user_id empty", "click", record(user_id=""), None, "bad_value"),
    ("user_id 129", "click", record(user_id="u" * 129), None, "bad_value"),
    ("brand_id 64", "click", record(brand_id="b" * 64), None, "ok"),
    ("brand_id 65", "click", record(brand_id="b" * 65), None, "bad_value"),
    ("sku_id empty", "click", record(sku_id=""), None, "bad_value"),
    ("sku_id 129", "click", record(sku_id="s" * 129), None, "bad_value"),
    ("channel tv", "click", record(channel="tv"), None, "bad_value"),
    ("channel empty", "click", record(channel=""), None, "bad_value"),
    ("room on search", "click", record(channel="search", room_id=""), None,
     "bad_value"),
    ("room without channel", "click", record(room_id="r" * 129), None, "bad_value"),
    ("room 128 on livestream", "click",
     record(channel="livestream", room_id="r" * 128), None, "ok"),
    ("region empty", "click", record(region=""), None, "bad_value"),
    ("region 65", "click", record(region="r" * 65), None, "bad_value"),
    ("click qty 0", "click", record(qty=0), None, "bad_value"),
    ("qty 1", "cart", record("cart", qty=1), None, "ok"),
    ("qty 1e6", "cart", record("cart", qty=1_000_000), None, "ok"),
    ("qty 1e6+1", "order", record("order", qty=1_000_001), None, "bad_value"),
    ("click order_id empty", "click", record(order_id=""), None, "bad_value"),
    ("click amount -1", "click", record(amount_fen=-1), None, "bad_value"),
    ("amount 0", "order", record("order", amount_fen=0), None, "ok"),
    ("amount -1", "order", record("order", amount_fen=-1), None, "bad_value"),
    ("amount 1e12", "cancel", record("cancel", amount_fen=10**12), None, "ok"),
    ("amount 1e12+1", "cancel", record("cancel", amount_fen=10**12 + 1), None,
     "bad_value"),
    # 6. topic_mismatch, checked right after type
    ("click on orders", "click", record(), "orders", "topic_mismatch"),
    ("cart on clicks", "cart", record("cart"), "clicks", "topic_mismatch"),
    ("order on carts", "order", record("order"), "carts", "topic_mismatch"),
    ("cancel on clicks", "cancel", record("cancel"), "clicks", "topic_mismatch"),
    ("mismatch beats later fields", "click", record(ts=DROP, qty=0), "orders",
     "topic_mismatch"),
    ("earlier fields beat mismatch", "click", record(event_id=""), "orders",
     "bad_value"),
    ("bad type beats mismatch", "click", record(type="view"), "orders", "bad_value"),
    # first failing check wins, in field order
    ("ts before qty", "cart", record("cart", ts="x", qty=0), None, "wrong_type"),
    ("user before brand", "click", record(user_id=None, brand_id=1), None,
     "missing_field"),
    ("channel before vip", "click", record(channel="tv", vip="yes"), None,
     "bad_value"),
    ("json before object", "click", b"[1,", None, "invalid_json"),
    # unknown extra fields are ignored, whatever they hold
    ("extra fields", "click", record(coupon={"x": [1, None]}, note=1.5), None, "ok"),
]  # fmt: skip

# Exactly 65,536 bytes is allowed, one more is too large (padding an unknown
# field keeps the event otherwise valid).
_padding = MAX_BYTES - len(record(note=""))
ROWS[4] = ("65536 bytes", "click", record(note="x" * _padding), None, "ok")
ROWS[5] = ("65537 bytes", "click", record(note="x" * (_padding + 1)), None, "too_large")


@pytest.mark.parametrize(
    ("event_type", "value", "topic", "expected"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_validation(
    event_type: str, value: bytes, topic: str | None, expected: str
) -> None:
    """Each record gets the reason code docs/validation.md gives it."""
    assert check(event_type, value, topic) == expected


def test_every_reason_is_covered() -> None:
    """The table holds at least one row per reason code."""
    assert {row[4] for row in ROWS} >= set(REASONS)


def test_size_rows_are_exact() -> None:
    assert len(ROWS[4][2]) == MAX_BYTES
    assert len(ROWS[5][2]) == MAX_BYTES + 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (record(), Event("e1", "click", 1_000, "u1", "b1", None, "other", None,
                         "unknown", False, 1, None, None)),
        (record("order", channel="livestream", room_id="r1", region="CN-BJ",
                vip=True, qty=3, sku_id="s1"),
         Event("e1", "order", 1_000, "u1", "b1", "s1", "livestream", "r1", "CN-BJ",
               True, 3, "o1", 100)),
        (record(channel=None, vip=None, qty=None),
         Event("e1", "click", 1_000, "u1", "b1", None, "other", None, "unknown",
               False, 1, None, None)),
    ],
)  # fmt: skip
def test_defaults(value: bytes, expected: Event) -> None:
    """Absent or null optional fields take their defaults: channel other,
    region unknown, vip false, qty 1."""
    assert validate(TOPIC[expected.type], value, MAX_BYTES) == expected


def test_max_record_bytes_is_a_setting() -> None:
    """The size limit comes from the settings (PRESALE_MAX_RECORD_BYTES)."""
    value = record()
    assert validate("clicks", value, len(value)) != "too_large"
    assert validate("clicks", value, len(value) - 1) == "too_large"
