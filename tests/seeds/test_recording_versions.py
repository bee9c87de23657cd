"""The recording formats beyond bare lines: `presale record`'s versioned format
and kcat's JSON envelope (docs/recordings.md s1c, s1d), read by `iter_entries`."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest

from streams.recordings import (
    Entry,
    RecordingError,
    iter_entries,
    iter_records,
    parse_entry,
    read_header,
)

HEADER = b'{"format":"presale-recording","version":1,"partitions":{"clicks":6}}'
CLICK = '{"event_id":"e1","type":"click","ts":1,"user_id":"u1","brand_id":"b1"}'


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v1(**fields: object) -> bytes:
    line = {"topic": "clicks", "partition": 2, "offset": 7, "ts": 1_700_000_000_000}
    return json.dumps(line | fields).encode()


@pytest.mark.parametrize(
    ("line", "entry"),
    [
        (
            v1(key="u1", raw=CLICK),
            Entry("clicks", b"u1", CLICK.encode(), 2, 1_700_000_000_000),
        ),
        (  # not UTF-8: base64, key and value alike
            v1(key_b64=b64(b"\xff"), raw_b64=b64(b"\x00\xfe")),
            Entry("clicks", b"\xff", b"\x00\xfe", 2, 1_700_000_000_000),
        ),
        (  # no key, no value (a tombstone)
            v1(raw=None),
            Entry("clicks", None, None, 2, 1_700_000_000_000),
        ),
        (
            v1(raw="", headers=[["trace", b64(b"\x01")], ["empty", ""]]),
            Entry(
                "clicks",
                None,
                b"",
                2,
                1_700_000_000_000,
                (("trace", b"\x01"), ("empty", b"")),
            ),
        ),
    ],
)
def test_versioned_record_lines(line: bytes, entry: Entry) -> None:
    """Each record line gives its topic, partition, timestamp, key, value and
    headers exactly."""
    assert parse_entry(line, versioned=True) == entry


@pytest.mark.parametrize(
    "line",
    [
        v1(raw=CLICK, raw_b64="eA=="),  # two payloads
        v1(),  # no payload
        v1(raw=CLICK, key="k", key_b64="aw=="),  # two keys
        v1(raw_b64="not base64!"),
        v1(raw=5),
        v1(raw=CLICK, partition=-1),
        v1(raw=CLICK, ts="now"),
        v1(raw=CLICK, topic="presale.clicks"),  # short names in this format
        v1(raw=CLICK, headers=[["h"]]),
        CLICK.encode(),  # a bare event is not a record line of this format
    ],
)
def test_versioned_record_lines_rejected(line: bytes) -> None:
    with pytest.raises(RecordingError):
        parse_entry(line, versioned=True)


def kcat(**fields: object) -> dict[str, object]:
    line = {"topic": "presale.orders", "partition": 1, "offset": 0}
    return line | {"tstype": "create", "ts": 5, "broker": 1} | fields


@pytest.mark.parametrize(
    ("line", "entry"),
    [
        (
            json.dumps(kcat(key="u1", payload=CLICK)).encode(),
            Entry("orders", b"u1", CLICK.encode(), 1, 5),
        ),
        (  # kcat writes bytes that are not UTF-8 into its JSON as they are
            b'{"topic":"t.clicks","partition":0,"offset":3,"tstype":"create",'
            b'"ts":9,"broker":1,"key":"\xff","payload":"\xed\xa0\x80 \xfe"}',
            Entry("clicks", b"\xff", b"\xed\xa0\x80 \xfe", 0, 9),
        ),
        (  # an encoded surrogate in a line that is otherwise UTF-8
            b'{"topic":"carts","partition":0,"offset":3,"tstype":"create",'
            b'"ts":9,"broker":1,"key":null,"payload":"\xed\xa0\x80"}',
            Entry("carts", None, b"\xed\xa0\x80", 0, 9),
        ),
        (
            json.dumps(kcat(key=None, payload=None, headers=["h", "v"])).encode(),
            Entry("orders", None, None, 1, 5, (("h", b"v"),)),
        ),
    ],
)
def test_kcat_lines(line: bytes, entry: Entry) -> None:
    """kcat's envelope: any topic prefix, its partition and timestamp, raw
    bytes back exactly."""
    assert parse_entry(line) == entry


@pytest.mark.parametrize(
    "fields",
    [
        {"topic": "presale.refunds"},
        {"partition": "1"},
        {"key": 5},
        {"headers": ["h"]},
    ],
)
def test_kcat_lines_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(RecordingError):
        parse_entry(json.dumps(kcat(payload="{}") | fields).encode())


def test_versioned_file(tmp_path: Path) -> None:
    """The header line is not a record; the reference reads the values (a
    missing value as empty bytes, the processor's invalid_json too)."""
    path = tmp_path / "r.jsonl.gz"
    body = [HEADER, b"", v1(key="u1", raw=CLICK), v1(raw=None)]
    path.write_bytes(gzip.compress(b"\n".join(body) + b"\n"))
    assert read_header(path) is not None
    assert [e.partition for e in iter_entries(path)] == [2, 2]
    assert list(iter_records(path)) == [
        ("clicks", b"u1", CLICK.encode()),
        ("clicks", None, b""),
    ]


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (b'{"format":"presale-recording","version":2}', "version 2"),
        (b'{"format":"presale-recording"}', "version None"),
        (b'{"format":"other","version":1}', "unknown recording format 'other'"),
    ],
)
def test_unknown_format_or_version(tmp_path: Path, header: bytes, words: str) -> None:
    """A recording from another tool or a newer presale is refused, naming why
    and where, not read as something else."""
    path = tmp_path / "new.jsonl"
    path.write_bytes(header + b"\n" + v1(raw=CLICK) + b"\n")
    with pytest.raises(RecordingError, match=rf"new\.jsonl:1: .*{words}"):
        list(iter_entries(path))


def test_bare_lines_and_kcat_lines_mix(tmp_path: Path) -> None:
    """Without a header each line is a bare event, an envelope or a kcat line;
    bare lines and envelopes carry no partition or timestamp."""
    path = tmp_path / "mixed.jsonl"
    lines = [
        CLICK.encode(),
        b'{"topic":"carts","raw":"x"}',
        json.dumps(kcat(key="k", payload="y")).encode(),
    ]
    path.write_bytes(b"\n".join(lines))
    assert list(iter_entries(path)) == [
        Entry("clicks", b"u1", CLICK.encode()),
        Entry("carts", None, b"x"),
        Entry("orders", b"k", b"y", 1, 5),
    ]
    assert read_header(path) is None
