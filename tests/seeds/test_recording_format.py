"""The recording format of docs/recordings.md: lines -> (topic, key, value)."""

from __future__ import annotations

import base64
import gzip
from pathlib import Path

import pytest

from streams.recordings import Companions, RecordingError, iter_records, parse_line

CLICK = b'{"event_id":"e1","type":"click","ts":1,"user_id":"u1","brand_id":"b1"}'


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # Plain events: topic from the type, key = user_id, value = the line.
        (CLICK, ("clicks", b"u1", CLICK)),
        (
            b'{"event_id":"e2","type":"cart","user_id":"u2"}',
            ("carts", b"u2", b'{"event_id":"e2","type":"cart","user_id":"u2"}'),
        ),
        (
            b'{"type":"order","user_id":"\xe5\xbc\xa0"}',
            ("orders", "张".encode(), b'{"type":"order","user_id":"\xe5\xbc\xa0"}'),
        ),
        (b'{"type":"cancel"}', ("orders", None, b'{"type":"cancel"}')),
        # Whitespace and key order are kept byte for byte.
        (
            b'{ "type" : "click", "user_id": 7 }',
            ("clicks", None, b'{ "type" : "click", "user_id": 7 }'),
        ),
        # Malformed but parseable content is published as it is.
        (
            b'{"type":"order","amount_fen":NaN}',
            ("orders", None, b'{"type":"order","amount_fen":NaN}'),
        ),
        (
            b'{"type":"click","user_id":"\\ud800"}',
            ("clicks", None, b'{"type":"click","user_id":"\\ud800"}'),
        ),
        # An object with "topic" and "event_id" is an event, not an envelope.
        (
            b'{"topic":"orders","event_id":"e3","type":"click","value":1}',
            (
                "clicks",
                None,
                b'{"topic":"orders","event_id":"e3","type":"click","value":1}',
            ),
        ),
        # Envelopes.
        (
            b'{"topic":"orders","key":"u9","value":{"type":"click", "ts": 1}}',
            ("orders", b"u9", b'{"type":"click","ts":1}'),
        ),
        (b'{"topic":"clicks","value":null}', ("clicks", None, b"null")),
        (b'{"topic":"carts","key":null,"value":[1, 2]}', ("carts", None, b"[1,2]")),
        (
            b'{"topic":"clicks","value":{"b":"\xe4\xb8\xad"}}',
            ("clicks", None, b'{"b":"\xe4\xb8\xad"}'),
        ),
        (
            b'{"topic":"clicks","value":{"u":"\\ud800"}}',
            ("clicks", None, b'{"u":"\\ud800"}'),
        ),
        (
            b'{"topic":"orders","key":"k","raw":"{\\"a\\": 1,}"}',
            ("orders", b"k", b'{"a": 1,}'),
        ),
        (b'{"topic":"orders","raw":""}', ("orders", None, b"")),
        (
            b'{"topic":"carts","raw":"caf\xc3\xa9 \\\\ud83d"}',
            ("carts", None, b"caf\xc3\xa9 \\ud83d"),
        ),
        (
            b'{"topic":"clicks","raw_b64":"' + base64.b64encode(b"\xff\xfe") + b'"}',
            ("clicks", None, b"\xff\xfe"),
        ),
    ],
)
def test_parse_line(line: bytes, expected: tuple[str, bytes | None, bytes]) -> None:
    """Each kind of line is published as the documented topic, key and bytes."""
    assert parse_line(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"[1, 2]",  # not an object and not an envelope
        b'"click"',
        b'{"type":"refund","user_id":"u1"}',  # no topic for this type
        b'{"event_id":"e1","user_id":"u1"}',  # no type at all
        b'{"topic":"presale.clicks","value":1}',  # short names only
        b'{"topic":"clicks","value":1,"raw":"1"}',  # two payloads
        b'{"topic":"clicks","raw":5}',
        b'{"topic":"clicks","raw_b64":"not base64!"}',
        b'{"topic":"clicks","key":5,"value":1}',
        b'{"topic":"clicks","raw":"\\ud800"}',  # raw text must be UTF-8
        b'{"type":"click"',  # not JSON
        b'{"type":"click","user_id":"\xff"}',  # the file itself is UTF-8
    ],
)
def test_parse_line_rejects(line: bytes) -> None:
    """Lines that cannot become a Kafka record are errors, not guesses."""
    with pytest.raises(RecordingError):
        parse_line(line)


@pytest.mark.parametrize("gzipped", [True, False])
def test_iter_records_file(tmp_path: Path, gzipped: bool) -> None:
    """Blank lines are skipped, CRLF endings stripped; gzip is detected by
    content, so a gzipped and a plain file give the same records."""
    text = (
        CLICK
        + b"\r\n\n"
        + b'{"topic":"orders","key":"k","raw":"x"}\n'
        + b'{"type":"cart","user_id":"u3"}'
    )
    path = tmp_path / "r.jsonl"
    path.write_bytes(gzip.compress(text) if gzipped else text)
    assert list(iter_records(path)) == [
        ("clicks", b"u1", CLICK),
        ("orders", b"k", b"x"),
        ("carts", b"u3", b'{"type":"cart","user_id":"u3"}'),
    ]


def test_iter_records_names_the_bad_line(tmp_path: Path) -> None:
    """An error says which line of which file."""
    path = tmp_path / "bad.jsonl"
    path.write_bytes(CLICK + b"\n[]\n")
    with pytest.raises(RecordingError, match=r"bad\.jsonl:2"):
        list(iter_records(path))


@pytest.mark.parametrize(
    ("recording", "name"),
    [
        ("seeds/streams/small.jsonl.gz", "small"),
        ("x/first-hour.jsonl", "first-hour"),
        ("a.b.jsonl.gz", "a.b"),
    ],
)
def test_companions(recording: str, name: str) -> None:
    """Companion files sit beside the recording, named after it."""
    companions = Companions.beside(Path(recording))
    folder = Path(recording).parent
    assert companions.name == name
    assert companions.baseline == folder / f"{name}.baseline.csv"
    assert companions.settings == folder / f"{name}.settings.json"
    assert companions.lastyear == folder / f"{name}.lastyear.json"
    assert companions.expected == folder / f"{name}.expected.json"
    assert companions.channels == folder / f"{name}.channels.csv"
