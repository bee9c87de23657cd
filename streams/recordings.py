"""Read a recorded presale stream: JSON lines -> (topic, key bytes, value bytes).

The service's reader (`presale replay`, `rehearse`); seeds/ (the generator and
the batch reference) reads recordings through it too.

The formats are described in docs/recordings.md: bare event lines and
envelopes, `presale record`'s versioned format (Kafka partition, timestamp and
headers too) and kcat's JSON envelope (`kcat -C -J`). `presale replay`
publishes what `iter_entries` yields, in file order; the batch reference reads
the same through `iter_records`.
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

from streams.errors import RecordingError

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

# `presale record`'s format: its first line names it (docs/recordings.md s1c).
FORMAT_NAME = "presale-recording"
FORMAT_VERSION = 1


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
    for entry in iter_entries(path):
        yield entry.record()


@dataclass(frozen=True, slots=True)
class Entry:
    """One record to publish, with what Kafka told us about it when known."""

    topic: str  # short name: clicks, carts, orders
    key: bytes | None
    value: bytes | None  # None: a record without a value (a tombstone)
    partition: int | None = None  # None: the key chooses (bare lines, envelopes)
    ts_ms: int | None = None  # the Kafka timestamp; None: pace by the event's ts
    headers: tuple[tuple[str, bytes], ...] = ()

    def record(self) -> Record:
        # The processor reads a missing value as invalid_json, like b"" (the
        # reference's check 3); the reference only takes bytes.
        return self.topic, self.key, self.value if self.value is not None else b""


def is_header(obj: object) -> bool:
    """True for the first line of a versioned recording (`presale record`)."""
    return (
        isinstance(obj, dict)
        and "format" in obj
        and "event_id" not in obj
        and "topic" not in obj
    )


def check_header(obj: dict[str, Any], where: str) -> None:
    if obj.get("format") != FORMAT_NAME:
        msg = f"{where}: unknown recording format {obj.get('format')!r}"
        raise RecordingError(msg)
    version = obj.get("version")
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        msg = (
            f"{where}: {FORMAT_NAME} version {version!r} is not one this presale "
            f"reads (up to {FORMAT_VERSION})"
        )
        raise RecordingError(msg)


def is_kcat(obj: object) -> bool:
    """True for a line of `kcat -C -J`: topic, partition, offset, payload..."""
    return (
        isinstance(obj, dict)
        and "payload" in obj
        and "partition" in obj
        and "topic" in obj
        and "event_id" not in obj
    )


def _short_topic(topic: object, where: str) -> str:
    """`presale.clicks` (any prefix) or `clicks` -> `clicks`."""
    short = topic.rsplit(".", 1)[-1] if isinstance(topic, str) else None
    if short not in TOPICS:
        msg = f"{where}: topic {topic!r} is not one of {TOPICS} (after a prefix)"
        raise RecordingError(msg)
    return short


def _int_field(obj: dict[str, Any], name: str, where: str) -> int:
    value = obj.get(name)
    if type(value) is not int or value < 0:
        msg = f"{where}: {name} must be a whole number, got {value!r}"
        raise RecordingError(msg)
    return value


def _raw_bytes(text: object, where: str, what: str) -> bytes | None:
    """A kcat key, payload or header value back to its bytes (`_kcat_loads`)."""
    if text is None:
        return None
    if not isinstance(text, str):
        msg = f"{where}: {what} must be a string or null"
        raise RecordingError(msg)
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        msg = f"{where}: {what} holds a lone surrogate escape"
        raise RecordingError(msg) from exc


def _kcat_entry(obj: dict[str, Any], where: str) -> Entry:
    headers = obj.get("headers") or []
    if not isinstance(headers, list) or len(headers) % 2:
        msg = f"{where}: kcat headers must be a flat list of names and values"
        raise RecordingError(msg)
    pairs = []
    for name, value in zip(headers[::2], headers[1::2], strict=True):
        if not isinstance(name, str):
            msg = f"{where}: kcat header names must be strings"
            raise RecordingError(msg)
        pairs.append((name, _raw_bytes(value, where, "a header value") or b""))
    return Entry(
        topic=_short_topic(obj["topic"], where),
        key=_raw_bytes(obj.get("key"), where, "key"),
        value=_raw_bytes(obj["payload"], where, "payload"),
        partition=_int_field(obj, "partition", where),
        ts_ms=_int_field(obj, "ts", where) if obj.get("ts") is not None else None,
        headers=tuple(pairs),
    )


def _b64(text: object, where: str, what: str) -> bytes:
    if not isinstance(text, str):
        msg = f"{where}: {what} must be a base64 string"
        raise RecordingError(msg)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        msg = f"{where}: {what} is not base64"
        raise RecordingError(msg) from exc


def _v1_entry(obj: object, where: str) -> Entry:
    """A record line of the versioned format (docs/recordings.md s1c)."""
    if not isinstance(obj, dict) or obj.get("topic") not in TOPICS:
        msg = f"{where}: a {FORMAT_NAME} line needs a topic, one of {TOPICS}"
        raise RecordingError(msg)
    if ("key" in obj) + ("key_b64" in obj) > 1 or ("raw" in obj) + (
        "raw_b64" in obj
    ) != 1:
        msg = f"{where}: a record line has one of key/key_b64 and one of raw/raw_b64"
        raise RecordingError(msg)
    key = (
        _b64(obj["key_b64"], where, "key_b64")
        if "key_b64" in obj
        else _key_bytes(obj.get("key"), where)
    )
    if "raw_b64" in obj:
        value: bytes | None = _b64(obj["raw_b64"], where, "raw_b64")
    elif obj["raw"] is None:
        value = None
    elif isinstance(obj["raw"], str):
        value = _utf8(obj["raw"], where, "raw")
    else:
        msg = f"{where}: raw must be a string or null"
        raise RecordingError(msg)
    headers = obj.get("headers") or []
    if not isinstance(headers, list) or not all(
        isinstance(h, list) and len(h) == 2 and isinstance(h[0], str) for h in headers
    ):
        msg = f"{where}: headers must be a list of [name, base64 value] pairs"
        raise RecordingError(msg)
    return Entry(
        topic=obj["topic"],
        key=key,
        value=value,
        partition=_int_field(obj, "partition", where),
        ts_ms=_int_field(obj, "ts", where),
        headers=tuple((h[0], _b64(h[1], where, "a header value")) for h in headers),
    )


def _loads(line: bytes, where: str) -> Any:
    try:
        obj = json.loads(line)
    except UnicodeDecodeError as exc:
        obj = _kcat_loads(line)
        if obj is None:
            msg = f"{where}: not a JSON line ({exc})"
            raise RecordingError(msg) from exc
        return obj
    except (ValueError, RecursionError) as exc:
        msg = f"{where}: not a JSON line ({exc})"
        raise RecordingError(msg) from exc
    if is_kcat(obj):
        # json.loads decodes bytes with surrogatepass: an encoded surrogate
        # (ED A0 80) would come back as one character, not its three bytes.
        return _kcat_loads(line)
    return obj


def _kcat_loads(line: bytes) -> Any:
    """A kcat line, its strings holding each byte that is not UTF-8 as a
    surrogateescape character: kcat writes keys and payloads into its JSON as
    they are, and `_raw_bytes` encodes them back to exactly those bytes."""
    try:
        obj = json.loads(line.decode("utf-8", "surrogateescape"))
    except (ValueError, RecursionError):
        return None
    return obj if is_kcat(obj) else None


def parse_entry(line: bytes, where: str = "line", versioned: bool = False) -> Entry:
    """One non-blank line -> an entry: a record line of the versioned format
    when `versioned`, else a kcat line, an envelope or a plain event."""
    obj = _loads(line, where)
    if versioned:
        return _v1_entry(obj, where)
    if is_kcat(obj):
        return _kcat_entry(obj, where)
    if is_envelope(obj):
        topic, key, value = _envelope_record(obj, where)
    else:
        topic, key, value = _event_record(obj, line, where)
    return Entry(topic, key, value)


def read_header(path: str | Path) -> dict[str, Any] | None:
    """The header of a versioned recording, None for the other formats."""
    with open_recording(path) as stream:
        for line in stream:
            if line.strip():
                try:
                    obj = json.loads(line)
                except (ValueError, RecursionError):
                    return None
                if not is_header(obj):
                    return None
                check_header(obj, f"{path}:1")
                return dict(obj)
    return None


def iter_entries(path: str | Path) -> Iterator[Entry]:
    """Yield the entries of any of the formats, in file order."""
    versioned = False
    first = True
    with open_recording(path) as stream:
        for number, line in enumerate(stream, start=1):
            if line.endswith(b"\n"):
                line = line[:-1]
                if line.endswith(b"\r"):
                    line = line[:-1]
            if not line.strip():
                continue
            where = f"{path}:{number}"
            if first:
                first = False
                obj = _loads(line, where)
                if is_header(obj):
                    check_header(obj, where)
                    versioned = True
                    continue
            yield parse_entry(line, where, versioned)


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
