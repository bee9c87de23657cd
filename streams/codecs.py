"""Decode once, at the edge: record bytes -> event, or a rejection with its reason."""

from __future__ import annotations

import base64
from typing import Any, Final

import orjson

from processors.events import (
    EVENT_DECODER,
    INVALID_JSON,
    INVALID_UTF8,
    TOO_LARGE,
    Event,
    Rejection,
    finish,
    fits,
    validate,
)

# A too-large record's dead letter keeps only its head, far below Kafka's 1 MB.
DEAD_LETTER_RAW_BYTES: Final = 4096


def decode(value: bytes | None, topic: str, max_bytes: int) -> Event | Rejection:
    """One input record's value, read from `topic` (short name: clicks, carts...)."""
    if value is None:
        return Rejection(INVALID_JSON, "the record has no value")
    if len(value) > max_bytes:
        return Rejection(TOO_LARGE, f"{len(value)} bytes is over the {max_bytes} limit")
    try:  # the fast path: a well-formed event of known fields (processors/events)
        event = EVENT_DECODER.decode(value)
    except ValueError:
        pass
    else:
        if fits(event, topic):
            done = finish(event)
            if done is not None:
                return done
    return decode_exactly(value, topic)


def decode_exactly(value: bytes, topic: str) -> Event | Rejection:
    """orjson, then every rule in order: the first one broken is the reason."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return Rejection(INVALID_UTF8, "the record is not UTF-8")
        return Rejection(INVALID_JSON, f"not JSON: {exc.msg}"[:200])
    return validate(obj, topic)


def dead_letter(
    rejection: Rejection, topic: str, partition: int, offset: int, value: bytes | None
) -> bytes:
    """The dead-letter record of CONTRACT section 6 (docs/validation.md)."""
    raw = value or b""
    record: dict[str, Any] = {
        "reason": rejection.reason,
        "detail": rejection.detail,
        "topic": topic,
        "partition": partition,
        "offset": offset,
    }
    if len(raw) > DEAD_LETTER_RAW_BYTES:
        raw = raw[:DEAD_LETTER_RAW_BYTES]
        record["truncated"] = True
    try:
        record["raw"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        record["raw_b64"] = base64.b64encode(raw).decode("ascii")
    return orjson.dumps(record)
