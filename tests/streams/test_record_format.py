"""`presale record` writes what streams/recordings.py reads back; the helpers of
record, expect and rehearse, without services."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord

from streams import record, recordings
from streams.cli_recordings import time_ms
from streams.expect import reference_settings
from streams.recordings import Entry, parse_entry
from streams.rehearse import Rehearsal, verdict, worker_settings_file
from streams.settings import Settings


def consumer_record(
    key: bytes | None, value: bytes | None, headers=()
) -> ConsumerRecord:
    return ConsumerRecord(
        topic="presale.orders",
        partition=4,
        offset=99,
        timestamp=1_795_000_000_123,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=-1,
        serialized_value_size=-1,
        headers=list(headers),
    )


@pytest.mark.parametrize(
    ("key", "value", "headers"),
    [
        (b"u1", b'{"type":"order"}', ()),
        ("张".encode(), "日本".encode(), ()),
        (b"\xff", b"\x00\xed\xa0\x80\xfe", (("h", b"\xff"),)),
        (None, b"", ()),
        (None, None, ()),
        (b"", b'"\\ud800" \r\n', (("a", b""), ("a", b"2"))),
    ],
)
def test_record_line_reads_back(key, value, headers) -> None:
    """Every key, value and header survives record -> read, byte for byte."""
    line = record.entry_line(consumer_record(key, value, headers), "orders")
    assert b"\n" not in line
    assert parse_entry(line, versioned=True) == Entry(
        "orders", key, value, 4, 1_795_000_000_123, tuple(headers)
    )


def test_format_name_matches_the_reader() -> None:
    """streams/record.py writes the format streams/recordings.py reads: the
    reader must accept what it writes."""
    assert record.FORMAT_NAME == recordings.FORMAT_NAME
    assert record.FORMAT_VERSION == recordings.FORMAT_VERSION


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1760529600000", 1_760_529_600_000),
        ("2025-10-15T20:00:00+08:00", 1_760_529_600_000),
        ("2025-10-15T12:00:00Z", 1_760_529_600_000),
        ("2025-10-15 12:00:01.5+00:00", 1_760_529_601_500),
        ("1974-04-14T00:30:43.510+00:00", 135_131_443_510),  # float: ...509
    ],
)
def test_time_ms(text: str, ms: int) -> None:
    assert time_ms(text) == ms


@pytest.mark.parametrize("text", ["2025-10-15T20:00", "yesterday", "-5"])
def test_time_ms_rejects(text: str) -> None:
    """A time without a zone is a guess: refused, like anything unparsable."""
    with pytest.raises(argparse.ArgumentTypeError):
        time_ms(text)


def test_reference_settings_come_from_the_settings_object(tmp_path: Path) -> None:
    """expect hands the reference what the worker uses: campaign, window,
    thresholds, floor, size limit, dedupe horizon, region cap, and the baseline
    CSVs as absolute paths."""
    csv = tmp_path / "b.csv"
    csv.write_text("brand_id,first_hour_gmv_fen\nb1,5\n")
    channels = tmp_path / "c.csv"
    channels.write_text(
        "channel,first_hour_clicks,first_hour_orders,first_hour_gross_gmv_fen\n"
        "search,10,2,300\n"
    )
    settings = Settings.from_env(
        {
            "PRESALE_CAMPAIGN_ID": "c1",
            "PRESALE_CAMPAIGN_START_MS": "1000",
            "PRESALE_CAMPAIGN_END_MS": "2000",
            "PRESALE_MILESTONES_FEN": "300,100",
            "PRESALE_YOY_MIN_BASELINE_FEN": "7",
            "PRESALE_MAX_RECORD_BYTES": "4096",
            "PRESALE_DEDUPE_HORIZON_MS": "60000",
            "PRESALE_BASELINE_CSV": os.path.relpath(csv),
            "PRESALE_CHANNEL_BASELINE_CSV": os.path.relpath(channels),
            "PRESALE_MAX_REGIONS": "9",
        }
    )
    assert reference_settings(settings) == {
        "PRESALE_CAMPAIGN_ID": "c1",
        "PRESALE_CAMPAIGN_START_MS": "1000",
        "PRESALE_CAMPAIGN_END_MS": "2000",
        "PRESALE_MILESTONES_FEN": "100,300",
        "PRESALE_YOY_MIN_BASELINE_FEN": "7",
        "PRESALE_MAX_RECORD_BYTES": "4096",
        "PRESALE_DEDUPE_HORIZON_MS": "60000",
        "PRESALE_MAX_REGIONS": "9",
        "PRESALE_BASELINE_CSV": str(csv.resolve()),
        "PRESALE_CHANNEL_BASELINE_CSV": str(channels.resolve()),
    }


def test_worker_settings_win_over_the_recording_settings(tmp_path: Path) -> None:
    """The rehearsal's worker gets the recording's settings with the fresh
    campaign, prefix and ports over them, in a file only its owner reads."""
    given = tmp_path / "x.settings.json"
    given.write_text(
        '{"PRESALE_CAMPAIGN_ID": "old", "PRESALE_TOPIC_PREFIX": "live",'
        ' "PRESALE_MILESTONES_FEN": "100"}'
    )
    fresh = Settings(campaign_id="old-rehearse-1", topic_prefix="p-rehearse-1")
    path = worker_settings_file(fresh, str(given), tmp_path)
    text = path.read_text()
    assert '"PRESALE_CAMPAIGN_ID": "old-rehearse-1"' in text
    assert '"PRESALE_TOPIC_PREFIX": "p-rehearse-1"' in text
    assert '"PRESALE_MILESTONES_FEN": "100"' in text
    assert path.stat().st_mode & 0o077 == 0


def test_verdict_lines() -> None:
    """Differences are listed (50 at most), then FAIL with their count."""
    failed = Rehearsal("c-rehearse-1", "p-rehearse-1", records=3)
    failed.differences = [f"/totals/clicks: {i} vs 0" for i in range(60)]
    lines = verdict(failed, "f.jsonl")
    assert lines[-1] == "FAIL: 60 differences from expect"
    assert sum(1 for x in lines if x.startswith("/totals")) == 50
    passed = Rehearsal("c-rehearse-1", "p-rehearse-1", records=3)
    assert verdict(passed, "f.jsonl")[-1] == "PASS: the live report equals expect's"


def test_the_recording_commands_load_without_seeds() -> None:
    """record, expect, rehearse and replay import seeds/ only when they run: a
    fresh interpreter that loads them and builds the parser has no seeds
    module."""
    code = (
        "import sys, streams.cli, streams.record, streams.expect, streams.rehearse,"
        " streams.replay; streams.cli.parser();"
        " print(sorted(m for m in sys.modules if m.split('.')[0] == 'seeds'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.stdout.strip() == "[]"
