"""streams.codecs: bytes -> event or rejection, and the dead-letter record."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import orjson
import pytest

from processors.events import EVENT_DECODER, Event, Rejection, fits
from streams.codecs import DEAD_LETTER_RAW_BYTES, dead_letter, decode
from tests.seeds.test_validation_table import MAX_BYTES as TABLE_MAX_BYTES
from tests.seeds.test_validation_table import ROWS as REFERENCE_ROWS
from tests.seeds.test_validation_table import TOPIC as REFERENCE_TOPIC

LIMIT = 65_536  # docs/validation.md: PRESALE_MAX_RECORD_BYTES default
CLICK: dict[str, Any] = {
    "event_id": "e1",
    "type": "click",
    "ts": 1_000,
    "user_id": "u1",
    "brand_id": "b1",
}
ORDER: dict[str, Any] = {**CLICK, "type": "order", "order_id": "o1", "amount_fen": 100}


def raw(obj: dict[str, Any], **overrides: Any) -> bytes:
    return json.dumps({**obj, **overrides}).encode()


def outcome(value: bytes | None, topic: str = "clicks", limit: int = LIMIT) -> str:
    """The outcome: "ok" for an accepted event, else the rejection's reason."""
    result = decode(value, topic, limit)
    if isinstance(result, Event):
        return "ok"
    assert isinstance(result, Rejection)
    return result.reason


def test_valid_event_decodes() -> None:
    """A valid JSON click decodes to the Event with its defaults filled."""
    value = b'{"event_id":"e1","type":"click","ts":5,"user_id":"u","brand_id":"b"}'
    assert decode(value, "clicks", LIMIT) == Event("e1", "click", 5, "u", "b")


@pytest.mark.parametrize(
    ("extra_bytes", "expected"),
    [(-1, "ok"), (0, "ok"), (1, "too_large"), (1_000, "too_large")],
)
def test_size_limit_edge(extra_bytes: int, expected: str) -> None:
    """A value of exactly max_bytes passes; one byte more is too_large."""
    value = raw(CLICK)
    assert outcome(value, limit=len(value) - extra_bytes) == expected


@pytest.mark.parametrize(
    "value",
    [
        b"\xff" * 101,  # not UTF-8 either
        b"[" * 101,  # not JSON either
        b"[]" + b" " * 99,  # not an object either
    ],
)
def test_too_large_is_checked_first(value: bytes) -> None:
    """too_large wins over every other defect of the value."""
    assert outcome(value, limit=100) == "too_large"


@pytest.mark.parametrize(
    "value",
    [
        b'{"event_id":"\xff"}',
        b"\xff",
        b"\xfe\xff{}",
        b'{"a":"\xc0\xaf"}',  # overlong encoding of "/"
        b'{"a":"\xed\xa0\x80"}',  # a UTF-8-encoded surrogate
        b'{"a":"\xe4\xb8"}',  # a cut multi-byte character
        raw(CLICK).replace(b'"u1"', b'"\x80"'),  # a continuation byte alone
    ],
)
def test_invalid_utf8(value: bytes) -> None:
    """A value that is not UTF-8 is invalid_utf8, even when it is also not JSON."""
    assert outcome(value) == "invalid_utf8"


@pytest.mark.parametrize(
    "value",
    [
        None,  # a tombstone record: no value at all
        b"",
        b"   ",
        b"hello",
        raw(CLICK)[:-1],  # truncated
        raw(CLICK)[:10],
        raw(CLICK) + raw(CLICK),
        raw(CLICK)[:-1] + b",}",
        raw(CLICK).replace(b'"', b"'"),
        raw(ORDER).replace(b"100", b"NaN"),
        raw(ORDER).replace(b"100", b"Infinity"),
        raw(ORDER).replace(b"100", b"-Infinity"),
        raw(ORDER).replace(b"100", b"1e400"),
        raw(ORDER).replace(b"100", b"-1e400"),
        raw(CLICK, note="NaN").replace(b'"NaN"', b"NaN"),  # even in an unknown field
        raw(CLICK).replace(b'"u1"', b'"\\ud800"'),  # lone high surrogate escape
        raw(CLICK).replace(b'"u1"', b'"\\udc00"'),  # lone low surrogate escape
        raw(CLICK).replace(b'"u1"', b'"\\ud800x"'),
        b'{"\\udfff": 1}',  # in a key
    ],
)
def test_invalid_json(value: bytes | None) -> None:
    """No value, empty or truncated JSON, NaN, +-Infinity, numbers beyond a double
    (1e400) and lone surrogate escapes are all invalid_json."""
    assert outcome(value, "orders" if value and b"order" in value else "clicks") == (
        "invalid_json"
    )


def test_surrogate_pair_escape_is_fine() -> None:
    """A correctly paired surrogate escape is a valid character, not an error."""
    assert outcome(raw(CLICK).replace(b'"u1"', b'"\\ud83d\\ude00"')) == "ok"


@pytest.mark.parametrize(
    "value", [b"[]", b'"click"', b"42", b"1.5", b"null", b"true", b"[{}]"]
)
def test_not_object(value: bytes) -> None:
    """Valid JSON that is not an object is not_object."""
    assert outcome(value) == "not_object"


@pytest.mark.parametrize(
    ("topic", "value", "expected"),
    [
        ("clicks", raw(CLICK, ts=2**64), "wrong_type"),
        ("clicks", raw(CLICK, ts=-(2**63) - 1), "wrong_type"),
        ("clicks", raw(CLICK, ts=10**30), "wrong_type"),
        ("orders", raw(ORDER, amount_fen=2**64), "wrong_type"),
        ("carts", raw(CLICK, type="cart", qty=2**64), "wrong_type"),
        # inside 64 bits it is an integer, and its range check decides
        ("orders", raw(ORDER, amount_fen=2**64 - 1), "bad_value"),
        ("clicks", raw(CLICK, ts=-(2**63)), "bad_value"),
        # in an unknown field it is ignored
        ("clicks", raw(CLICK, extra=2**64), "ok"),
        ("clicks", raw(CLICK, extra=-(2**63) - 1), "ok"),
        ("clicks", raw(CLICK, extra=[10**30, {"deep": 10**40}]), "ok"),
    ],
)
def test_integers_beyond_64_bits(topic: str, value: bytes, expected: str) -> None:
    """An integer outside [-2^63, 2^64-1] is read as a float: wrong_type in an
    integer field, ignored in an unknown one."""
    assert outcome(value, topic) == expected


@pytest.mark.parametrize(
    ("topic", "value", "expected"),
    [
        ("clicks", raw(CLICK, vip="true"), "wrong_type"),
        ("clicks", raw(CLICK, ts=True), "wrong_type"),
        ("orders", raw(ORDER, amount_fen=1.0), "wrong_type"),
        ("orders", raw(ORDER, qty=0), "bad_value"),
        ("orders", raw(CLICK), "topic_mismatch"),
        ("clicks", raw(CLICK, event_id=None), "missing_field"),
    ],
)
def test_field_checks_follow_decoding(topic: str, value: bytes, expected: str) -> None:
    """After decoding, the field rules of processors.events apply unchanged."""
    assert outcome(value, topic) == expected


@pytest.mark.parametrize(
    ("event_type", "value", "topic", "expected"),
    [row[1:] for row in REFERENCE_ROWS],
    ids=[row[0] for row in REFERENCE_ROWS],
)
def test_agrees_with_reference_table(
    event_type: str, value: bytes, topic: str | None, expected: str
) -> None:
    """The stream codec gives every row of the batch reference's validation table
    (tests/seeds/test_validation_table.py) the same reason or acceptance: the two
    independent implementations agree."""
    got = outcome(value, topic or REFERENCE_TOPIC[event_type], TABLE_MAX_BYTES)
    assert got == expected


def test_reference_table_is_the_full_one() -> None:
    """The imported table is the real one: over 100 rows covering all 8 reasons."""
    assert len(REFERENCE_ROWS) > 100
    assert {row[4] for row in REFERENCE_ROWS} >= {
        "ok",
        "too_large",
        "invalid_utf8",
        "invalid_json",
        "not_object",
        "missing_field",
        "wrong_type",
        "bad_value",
        "topic_mismatch",
    }


# ---------------------------------------------------------------------------
# dead_letter

REJECTION = Rejection("bad_value", "qty must be in [1, 1000000]")


def letter(value: bytes | None, rejection: Rejection = REJECTION) -> dict[str, Any]:
    out = dead_letter(rejection, "presale.clicks", 3, 42, value)
    parsed = orjson.loads(out)
    assert isinstance(parsed, dict)
    return parsed


def test_dead_letter_utf8_keeps_raw() -> None:
    """A UTF-8 value is kept as text in `raw`, with every field of the record."""
    value = '{"user_id":"张三","qty":0}'.encode()
    assert letter(value) == {
        "reason": "bad_value",
        "detail": "qty must be in [1, 1000000]",
        "topic": "presale.clicks",
        "partition": 3,
        "offset": 42,
        "raw": '{"user_id":"张三","qty":0}',
    }


def test_dead_letter_non_utf8_uses_raw_b64() -> None:
    """A value that is not UTF-8 goes as base64 in `raw_b64`, and `raw` is absent."""
    value = b'{"a":"\xff\xfe"}'
    rejection = Rejection("invalid_utf8", "the record is not UTF-8")
    assert letter(value, rejection) == {
        "reason": "invalid_utf8",
        "detail": "the record is not UTF-8",
        "topic": "presale.clicks",
        "partition": 3,
        "offset": 42,
        "raw_b64": base64.b64encode(value).decode("ascii"),
    }


@pytest.mark.parametrize(
    ("size", "truncated"),
    [
        (DEAD_LETTER_RAW_BYTES - 1, False),
        (DEAD_LETTER_RAW_BYTES, False),
        (DEAD_LETTER_RAW_BYTES + 1, True),
        (10 * 1024 * 1024, True),  # a 10 MB record
    ],
)
def test_dead_letter_truncation(size: int, truncated: bool) -> None:
    """Up to 4,096 bytes the raw value is whole; beyond, only its first 4,096
    bytes are kept and "truncated": true is set."""
    assert DEAD_LETTER_RAW_BYTES == 4096
    value = (b"abcdefghijklmnopqrstuvwxyz" * (size // 26 + 1))[:size]
    out = letter(value, Rejection("too_large", "too big"))
    assert out["raw"] == value[:4096].decode()
    assert len(out["raw"]) == min(size, 4096)
    assert out.get("truncated", False) is truncated
    if not truncated:
        assert "truncated" not in out


def test_dead_letter_truncated_non_utf8() -> None:
    """A too-large value that is not UTF-8 keeps its first 4,096 bytes in raw_b64."""
    value = b"\xff" * 5_000
    out = letter(value, Rejection("too_large", "too big"))
    assert "raw" not in out
    assert out["truncated"] is True
    assert base64.b64decode(out["raw_b64"]) == b"\xff" * 4096


def test_dead_letter_cut_inside_a_character() -> None:
    """When the 4,096-byte cut splits a multi-byte character the kept head is no
    longer UTF-8, so it goes as raw_b64 (the exact first 4,096 bytes)."""
    value = b"a" * 4095 + "张".encode() + b"tail"  # 张 spans bytes 4095..4097
    out = letter(value, Rejection("too_large", "too big"))
    assert out["truncated"] is True
    assert "raw" not in out
    assert base64.b64decode(out["raw_b64"]) == value[:4096]


def test_dead_letter_of_a_10mb_record_is_small() -> None:
    """The dead letter of a 10 MB record stays far below Kafka's 1 MB limit
    (under 5,000 bytes here)."""
    out = dead_letter(
        Rejection("too_large", "too big"), "presale.orders", 0, 1, b"x" * 10_000_000
    )
    assert len(out) < 5_000


def test_dead_letter_of_no_value() -> None:
    """A record without a value (None) gets an empty `raw`."""
    out = letter(None, Rejection("invalid_json", "the record has no value"))
    assert out["raw"] == ""
    assert out["reason"] == "invalid_json"
    assert set(out) == {"reason", "detail", "topic", "partition", "offset", "raw"}


@pytest.mark.parametrize(
    "value",
    [
        raw(CLICK, qty=0),
        b"\xff\x00",
        b"[1,",
        b"\x00" * 5000,
        b'{"x":"' + "\u2028\ud7ff".encode() + b'"}',
    ],
)
def test_dead_letter_round_trips(value: bytes) -> None:
    """Whatever the value, the dead letter is JSON from which the original bytes
    (its first 4,096) come back exactly."""
    out = letter(value)
    kept = (
        out["raw"].encode("utf-8") if "raw" in out else base64.b64decode(out["raw_b64"])
    )
    assert kept == value[:4096]
    assert ("raw" in out) != ("raw_b64" in out)


# The fast path (msgspec's typed decoder, then `fits`) must give exactly what
# the exact path (orjson, then every rule in order) gives, for any bytes.

FIELD_VALUES: dict[str, list[Any]] = {
    "event_id": ["e1", "", "é" * 128, "é" * 129, 7, None, ["e"], "e\u200b", "Ｅ1"],
    "type": ["click", "cart", "order", "cancel", "Click", "", 1, None],
    "ts": [0, 1_760_529_600_000, 2**53 - 1, 2**53, -1, 1.5, 1e3, "1", True, None],
    "user_id": ["u1", "", "x" * 129, 0, None],
    "brand_id": [
        *("b1", "x" * 64, "x" * 65, False, None, "Ａpple", "Apple\u200b"),
        *("[/]", "\x1b[2J", "\ufdfa" * 4, "e\u0301" * 40),
    ],
    "sku_id": ["s1", "", 3, None],
    "channel": ["search", "livestream", "flash_sale", "other", "tv", "", 2, None],
    "room_id": ["r1", "", 5, None, "Ｒ1", "r\u202e"],
    "region": ["CN-31", "", "x" * 65, 1, None, "ＺＪ", "Z\x00"],
    "vip": [True, False, "true", 1, 0, None],
    "qty": [1, 2, 1_000_000, 1_000_001, 0, -1, 1.0, "2", True, None],
    "order_id": ["o1", "", "x" * 129, 9, None, "Ｏ1", "o\x85"],
    "amount_fen": [0, 1, 10**12, 10**12 + 1, -1, 1.5, "100", False, None, 2**64],
    "extra": [1, "x", None, [1, [2]], {"a": 1}],
}


def _exactly(value: bytes | None, topic: str) -> Event | Rejection:
    from streams.codecs import decode_exactly

    if value is None or len(value) > LIMIT:  # decided before either path
        return decode(value, topic, LIMIT)
    return decode_exactly(value, topic)


@pytest.mark.parametrize("topic", ["clicks", "carts", "orders"])
@pytest.mark.parametrize("seed", range(4))
def test_fast_path_agrees_with_exact_path(topic: str, seed: int) -> None:
    import random

    rng = random.Random(seed)
    base = {"clicks": CLICK, "carts": {**CLICK, "type": "cart"}, "orders": ORDER}
    seen: set[str] = set()
    for _ in range(3_000):
        obj = dict(base[topic])
        for _ in range(rng.randint(0, 3)):
            name = rng.choice(list(FIELD_VALUES))
            if rng.random() < 0.15:
                obj.pop(name, None)
            else:
                obj[name] = rng.choice(FIELD_VALUES[name])
        value = json.dumps(obj, ensure_ascii=rng.random() < 0.5).encode()
        got, want = decode(value, topic, LIMIT), _exactly(value, topic)
        assert got == want, value
        assert type(got) is type(want)
        seen.add("ok" if isinstance(got, Event) else got.reason)
    assert "ok" in seen and len(seen) >= 4  # both paths were walked


@pytest.mark.parametrize(
    "value",
    [
        b'{"event_id":"e","type":"click","ts":1,"user_id":"u","brand_id":"b","x":1e999}',
        b'{"event_id":"e","type":"click","ts":1,"user_id":"u","brand_id":"b","x":'
        + b"[" * 2000
        + b"]" * 2000
        + b"}",
        b'{"event_id":"e","type":"click","ts":1,"user_id":"u","brand_id":"b","x":'
        + str(2**70).encode()
        + b"}",
        b'{"event_id":"e","type":"click","ts":1,"ts":2,"user_id":"u","brand_id":"b"}',
        b'{"event_id":"e","type":"click","ts":1,"ts":"x","user_id":"u","brand_id":"b"}',
        b'{"event_id":"e","type":"click","ts":"x","ts":1,"user_id":"u","brand_id":"b"}',
        b'{"event_id":"\\ud800","type":"click","ts":1,"user_id":"u","brand_id":"b"}',
        b'{"event_id":"\\u0065","type":"click","\\u0074s":1,"user_id":"u","brand_id":"b"}',
        b'{"event_id":"e\x01","type":"click","ts":1,"user_id":"u","brand_id":"b"}',
        b'{"event_id":"e","type":"click","ts":-0,"user_id":"u","brand_id":"b"}',
        b'{"event_id":"e","type":"order","ts":1,"user_id":"u","brand_id":"b",'
        b'"order_id":"o","amount_fen":0}',
        b'{"event_id":"e","type":"order","ts":1,"user_id":"u","brand_id":"b",'
        b'"order_id":"o"}',
        b'{"event_id":"e","type":"click","ts":1,"user_id":"u","brand_id":"b",'
        b'"channel":"livestream"}',
        b'\xef\xbb\xbf{"event_id":"e","type":"click","ts":1,"user_id":"u","brand_id":"b"}',
        b' {"event_id":"e","type":"click","ts":1,"user_id":"u","brand_id":"b"} ',
        b'{"event_id":"e","type":"click","ts":1,"user_id":"u","brand_id":"b"}x',
        b'{"event_id":"e\xff","type":"click","ts":1,"user_id":"u","brand_id":"b"}',
    ],
)
def test_fast_path_agrees_on_edge_bytes(value: bytes) -> None:
    for topic in ("clicks", "orders"):
        assert decode(value, topic, LIMIT) == _exactly(value, topic)


def test_fast_path_agrees_on_the_recordings() -> None:
    from pathlib import Path

    from streams.recordings import iter_records

    streams = Path(__file__).resolve().parents[2] / "seeds" / "streams"
    n = fast = 0
    for name in ("small.jsonl.gz", "first-hour.jsonl.gz"):
        for topic, _key, value in iter_records(streams / name):
            assert decode(value, topic, LIMIT) == _exactly(value, topic), value
            n += 1
            with contextlib.suppress(ValueError):
                fast += fits(EVENT_DECODER.decode(value or b""), topic)
    assert n > 100_000
    # All but the ~3% with a field the contract does not know (a coupon) and the
    # malformed ones take the fast path.
    assert fast > 0.9 * n
