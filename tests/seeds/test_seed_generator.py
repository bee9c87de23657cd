"""The generator: deterministic bytes, calibration by construction, noise."""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from seeds import generate
from seeds.reference import REASONS, expected_report, load_settings
from seeds.summary import summarize
from streams.recordings import Companions, is_envelope

TINY = ["--brands", "60", "--top-brands", "5", "--doubled", "12", "--scale", "0.00001"]


def make(tmp_path: Path, *args: str, name: str = "w") -> Companions:
    out = tmp_path / f"{name}.jsonl.gz"
    assert generate.main([*args, "--out", str(out)]) == 0
    return Companions.beside(out)


def all_bytes(companions: Companions) -> dict[str, bytes]:
    paths = [companions.recording, companions.baseline, companions.settings,
             companions.lastyear, companions.expected,
             companions.channels]  # fmt: skip
    return {path.name: path.read_bytes() for path in paths}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Companions:
    """A 300-brand world (about 30k records) shared by the noise tests."""
    folder = tmp_path_factory.mktemp("world")
    return make(folder, "--seed", "7", "--brands", "300", "--doubled", "90",
                "--scale", "0.00004")  # fmt: skip


@pytest.fixture(scope="module")
def lines(world: Companions) -> list[dict[str, Any]]:
    with gzip.open(world.recording, "rt", encoding="utf-8") as stream:
        return [json.loads(line) for line in stream]


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    """Two runs with one seed write byte-identical files, gzip header included."""
    first = all_bytes(make(tmp_path / "a", "--seed", "3", *TINY))
    second = all_bytes(make(tmp_path / "b", "--seed", "3", *TINY))
    assert first == second


def test_other_seed_other_bytes(tmp_path: Path) -> None:
    first = make(tmp_path / "a", "--seed", "3", *TINY).recording.read_bytes()
    second = make(tmp_path / "b", "--seed", "4", *TINY).recording.read_bytes()
    assert first != second


@pytest.mark.parametrize(
    ("brands", "top", "doubled", "scale"),
    [
        (60, 5, 12, 0.00001),
        (40, 35, 5, 0.00001),
        (80, 1, 30, 0.000001),
        (120, 35, 40, 0.0001),
        (200, 35, 60, 0.00004),
    ],
)
def test_calibrated_by_construction(
    tmp_path: Path, brands: int, top: int, doubled: int, scale: float
) -> None:
    """At any scale, exactly --top-brands brands reach the scaled ¥100M in the
    first hour and exactly --doubled brands double their baseline."""
    companions = make(tmp_path, "--brands", str(brands), "--top-brands", str(top),
                      "--doubled", str(doubled), "--scale", str(scale))  # fmt: skip
    report = json.loads(companions.expected.read_text())
    top_fen = round(10_000_000_000 * scale)
    assert report["first_hour"]["brands_reached"][str(top_fen)] == top
    assert report["first_hour"]["brands_doubled"] == doubled
    reached = [
        row["brand_id"]
        for row in report["brands"]
        if row["first_hour_gross_gmv_fen"] >= top_fen
    ]
    assert len(reached) == top


def test_doubled_too_many_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Asking for more doubled brands than can double is an error, not a lie."""
    out = tmp_path / "x.jsonl.gz"
    assert generate.main([*TINY[:-4], "--doubled", "61", "--scale", "0.00001",
                          "--out", str(out)]) == 1  # fmt: skip
    assert "--doubled 61" in capsys.readouterr().err


def test_companion_files(world: Companions) -> None:
    """Settings name env vars, the CSV path is relative, the CSV has a header."""
    settings = load_settings(world.settings)
    assert set(settings) == {
        "PRESALE_CAMPAIGN_ID",
        "PRESALE_CAMPAIGN_START_MS",
        "PRESALE_CAMPAIGN_END_MS",
        "PRESALE_MILESTONES_FEN",
        "PRESALE_YOY_MIN_BASELINE_FEN",
        "PRESALE_BASELINE_CSV",
        "PRESALE_CHANNEL_BASELINE_CSV",
    }
    assert settings["PRESALE_BASELINE_CSV"] == world.baseline.name
    assert settings["PRESALE_CHANNEL_BASELINE_CSV"] == world.channels.name
    with open(world.channels, newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == [
        "channel",
        "first_hour_clicks",
        "first_hour_orders",
        "first_hour_gross_gmv_fen",
    ]
    assert [row[0] for row in rows[1:]] == list(generate.CHANNELS)
    assert settings["PRESALE_CAMPAIGN_START_MS"] == str(generate.T0_MS)
    assert settings["PRESALE_MILESTONES_FEN"] == "40000,400000"
    assert settings["PRESALE_YOY_MIN_BASELINE_FEN"] == "400"
    with open(world.baseline, newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["brand_id", "first_hour_gmv_fen"]
    assert all(int(fen) > 0 for _, fen in rows[1:])
    lastyear = json.loads(world.lastyear.read_text())
    assert {"first_hour_livestream_clicks_per_room", "campaign_flash_sale_orders",
            "campaign_conversion"} <= set(lastyear)  # fmt: skip


def test_expected_matches_fresh_reference(world: Companions) -> None:
    """expected.json is what the reference computes from the written file."""
    fresh = expected_report(world.recording, load_settings(world.settings))
    assert json.loads(world.expected.read_text()) == fresh


def test_every_reason_code_is_injected(world: Companions) -> None:
    """Malformed records cover every reason code, about 0.5% of records."""
    report = json.loads(world.expected.read_text())
    assert set(report["dead_letters_by_reason"]) == set(REASONS)
    assert report["dead_letters_by_reason"]["too_large"] == 2
    records = summarize(world.recording)["records"]
    assert 0.004 < report["dead_letters"] / records < 0.01


def test_noise(lines: list[dict[str, Any]]) -> None:
    """Producer duplicates, re-sent orders, double cancels, cancels ahead of
    their order, out-of-order arrival, events outside the window."""
    events = [line for line in lines if not is_envelope(line) and "ts" in line]
    ids = Counter(json.dumps(e, sort_keys=True) for e in events)
    assert sum(n - 1 for n in ids.values()) > 100  # byte-identical duplicates
    order_event_ids: dict[str, set[str]] = {}
    cancel_event_ids: dict[str, set[str]] = {}
    first_seen: dict[tuple[str, str], int] = {}
    for index, event in enumerate(events):
        if event["type"] in ("order", "cancel") and isinstance(
            event.get("order_id"), str
        ):
            target = order_event_ids if event["type"] == "order" else cancel_event_ids
            target.setdefault(event["order_id"], set()).add(event["event_id"])
            first_seen.setdefault((event["type"], event["order_id"]), index)
    assert sum(1 for ids_ in order_event_ids.values() if len(ids_) > 1) > 10
    assert sum(1 for ids_ in cancel_event_ids.values() if len(ids_) > 1) > 3
    cancels_first = [
        order_id
        for (kind, order_id), index in first_seen.items()
        if kind == "cancel" and first_seen.get(("order", order_id), -1) > index
    ]
    assert len(cancels_first) > 3
    # Out of order: an event whose ts is more than 5 s before the latest ts seen.
    latest, late = 0, 0
    for event in events:
        if isinstance(event["ts"], int):
            late += event["ts"] < latest - 5_000
            latest = max(latest, event["ts"])
    assert late > 100
    ts = [e["ts"] for e in events if isinstance(e["ts"], int)]
    assert min(ts) < generate.T0_MS
    assert max(ts) >= generate.T0_MS + 120 * 60_000


def test_duplicates_identical_in_counted_fields(lines: list[dict[str, Any]]) -> None:
    """Every copy of an order (same order_id) carries the same counted fields,
    so the result does not depend on which copy arrives first."""
    counted = ("ts", "amount_fen", "qty", "vip", "brand_id", "channel", "user_id")
    seen: dict[tuple[str, str], tuple[Any, ...]] = {}
    for line in lines:
        if is_envelope(line) or line.get("type") not in ("order", "cancel"):
            continue
        if not isinstance(line.get("order_id"), str) or line["order_id"] == "":
            continue
        key = (line["type"], line["order_id"])
        fields = tuple(line.get(name) for name in counted)
        assert seen.setdefault(key, fields) == fields


def test_summary_facts(world: Companions) -> None:
    """The summary, measured on the file, shows the planned growth."""
    summary = summarize(world.recording)
    assert summary["brands_doubled"] == 90
    assert abs(summary["livestream"]["growth_pct"] - 40) <= 2
    assert summary["flash_sale"]["ratio"] > 2
    assert abs(summary["conversion"]["growth_pct"] - 15) <= 0.5
    assert summary["out_of_window"] > 0
    text = generate.format_summary(summary)
    assert "brands doubled" in text


def test_cli_accepts_its_subcommand_word(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`presale seeds generate ...` may pass "generate" on; --summary prints
    the facts measured on the written file."""
    out = tmp_path / "c.jsonl.gz"
    assert generate.main(["generate", *TINY, "--out", str(out), "--summary"]) == 0
    printed = capsys.readouterr().out
    assert "5 brands reached ¥1,000.00 (100000 fen)" in printed
    assert "12 brands doubled" in printed
