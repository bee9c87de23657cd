"""Read a recorded presale stream: JSON lines -> (topic, key bytes, value bytes).

The format is described in docs/recordings.md. `presale replay` publishes what
`iter_records` yields, in file order; the batch reference reads the same.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Short topic names used in recordings; the processor prefixes them
# ("clicks" -> "presale.clicks").
TOPICS: tuple[str, ...] = ("clicks", "carts", "orders")

# Which topic a plain event line goes to, by its "type".
TOPIC_OF_TYPE: dict[str, str] = {
    "click": "clicks",
    "cart": "carts",
    "order": "orders",
    "cancel": "orders",
}

ENVELOPE_PAYLOADS: tuple[str, ...] = ("value", "raw", "raw_b64")

# A gzip stream starts with these two bytes; used instead of trusting the name.
GZIP_MAGIC = b"\x1f\x8b"

Record = tuple[str, bytes | None, bytes]


class RecordingError(ValueError):
    """A recording line that cannot be turned into a Kafka record."""


def topic_of_type(event_type: object) -> str | None:
    """The topic a plain event of this `type` goes to, None if unroutable."""
    return TOPIC_OF_TYPE.get(event_type) if isinstance(event_type, str) else None


def is_envelope(obj: object) -> bool:
    """True when a parsed line is an envelope rather than a plain event."""
    return (
        isinstance(obj, dict)
        and "topic" in obj
        and any(name in obj for name in ENVELOPE_PAYLOADS)
        and "event_id" not in obj
    )


def compact_json(value: Any) -> bytes:
    """The bytes an envelope's `value` is published as: compact JSON, UTF-8."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate cannot be UTF-8; keep it as a \\uXXXX escape instead.
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def open_recording(path: str | Path) -> io.BufferedIOBase:
    """Open a recording for binary reading, gunzipping when it is gzipped."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == GZIP_MAGIC
    if gzipped:
        return gzip.open(path, "rb")
    return open(path, "rb")  # the caller closes it


def _utf8(text: str, where: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        msg = f"{where}: {what} holds a lone surrogate; use raw_b64 for such bytes"
        raise RecordingError(msg) from exc


def _key_bytes(key: object, where: str) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, str):
        return _utf8(key, where, "envelope key")
    msg = f"{where}: envelope key must be a string or null, got {type(key).__name__}"
    raise RecordingError(msg)


def _envelope_record(obj: dict[str, Any], where: str) -> Record:
    topic = obj["topic"]
    if topic not in TOPICS:
        msg = f"{where}: envelope topic must be one of {TOPICS}, got {topic!r}"
        raise RecordingError(msg)
    payloads = [name for name in ENVELOPE_PAYLOADS if name in obj]
    if len(payloads) != 1:
        msg = f"{where}: envelope needs exactly one of {ENVELOPE_PAYLOADS}"
        raise RecordingError(msg)
    key = _key_bytes(obj.get("key"), where)
    payload = payloads[0]
    if payload == "value":
        return topic, key, compact_json(obj["value"])
    text = obj[payload]
    if not isinstance(text, str):
        msg = f"{where}: envelope {payload} must be a string"
        raise RecordingError(msg)
    if payload == "raw":
        return topic, key, _utf8(text, where, "envelope raw")
    try:
        return topic, key, base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        msg = f"{where}: envelope raw_b64 is not base64"
        raise RecordingError(msg) from exc


def _event_record(obj: object, line: bytes, where: str) -> Record:
    if not isinstance(obj, dict):
        msg = f"{where}: a line that is not an object must be an envelope"
        raise RecordingError(msg)
    topic = topic_of_type(obj.get("type"))
    if topic is None:
        msg = f"{where}: plain event has no routable type; use an envelope"
        raise RecordingError(msg)
    return topic, _event_key(obj.get("user_id")), line


def _event_key(user_id: object) -> bytes | None:
    """A plain event's key: its user_id when that is a string that is valid
    Unicode, else null (a malformed event still gets published)."""
    if not isinstance(user_id, str):
        return None
    try:
        return user_id.encode("utf-8")
    except UnicodeEncodeError:
        return None


def parse_line(line: bytes, where: str = "line") -> Record | None:
    """One recording line (newline already stripped) -> a record, None if blank."""
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        msg = f"{where}: not a JSON line ({exc})"
        raise RecordingError(msg) from exc
    if is_envelope(obj):
        return _envelope_record(obj, where)
    return _event_record(obj, line, where)


def iter_records(path: str | Path) -> Iterator[Record]:
    """Yield (topic short name, key bytes or None, value bytes) in file order."""
    with open_recording(path) as stream:
        for number, line in enumerate(stream, start=1):
            if line.endswith(b"\n"):
                line = line[:-1]
                if line.endswith(b"\r"):
                    line = line[:-1]
            record = parse_line(line, f"{path}:{number}")
            if record is not None:
                yield record


@dataclass(slots=True)
class Companions:
    """Paths of a recording and its companion files."""

    recording: Path
    baseline: Path
    settings: Path
    lastyear: Path
    expected: Path
    channels: Path  # last year's first hour per channel (CONTRACT 3b)

    @classmethod
    def beside(cls, recording: Path) -> Companions:
        name = recording.name
        for suffix in (".jsonl.gz", ".jsonl", ".gz"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        folder = recording.parent
        return cls(
            recording=recording,
            baseline=folder / f"{name}.baseline.csv",
            settings=folder / f"{name}.settings.json",
            lastyear=folder / f"{name}.lastyear.json",
            expected=folder / f"{name}.expected.json",
            channels=folder / f"{name}.channels.csv",
        )

    @property
    def name(self) -> str:
        return self.baseline.name[: -len(".baseline.csv")]
