"""The committed recordings (seeds/streams/) against the batch reference.

Each recording's expected.json must equal a fresh reference computation, the
calibrated first hour must show its promised numbers, and every recording must
be remade byte for byte by the generator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from seeds import generate, reference
from seeds.summary import summary_facts
from streams.recordings import Companions

STREAMS = generate.STREAMS_DIR
NAMES = sorted(generate.COMMITTED_RECORDINGS)


@dataclass(frozen=True)
class Measured:
    """One read of a committed recording through the reference."""

    companions: Companions
    settings: dict[str, str]
    report: dict[str, Any]
    summary: dict[str, Any]


_cache: dict[str, Measured] = {}


def measured(name: str) -> Measured:
    if name not in _cache:
        companions = Companions.beside(STREAMS / f"{name}.jsonl.gz")
        settings = reference.load_settings(companions.settings)
        campaign = reference.campaign_from_settings(
            settings, companions.settings.parent
        )
        result = reference.scan(companions.recording, campaign)
        report = reference.build_report(result, campaign)
        facts = reference.measure_facts(result, campaign)
        lastyear = json.loads(companions.lastyear.read_text(encoding="utf-8"))
        summary = summary_facts(
            companions.recording, report, facts, lastyear, result.records
        )
        _cache[name] = Measured(companions, settings, report, summary)
    return _cache[name]


def test_committed_set_is_complete() -> None:
    """Every recording in seeds/streams/ is one the generator can remake."""
    found = sorted(p.name[: -len(".jsonl.gz")] for p in STREAMS.glob("*.jsonl.gz"))
    assert found == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_expected_equals_fresh_reference(name: str) -> None:
    """expected.json equals the report the reference computes now."""
    got = measured(name)
    expected = json.loads(got.companions.expected.read_text(encoding="utf-8"))
    assert expected == got.report
    # And through the public entry point, baseline path resolved beside it.
    assert expected == reference.expected_report(got.companions.recording, got.settings)


@pytest.mark.parametrize("name", NAMES)
def test_companions_are_self_contained(name: str) -> None:
    """Settings are env vars with string values; the baseline CSV path is
    relative, beside the recording; the recording stays a few MB."""
    got = measured(name)
    assert all(isinstance(value, str) for value in got.settings.values())
    csv_path = Path(got.settings["PRESALE_BASELINE_CSV"])
    assert not csv_path.is_absolute()
    assert (got.companions.settings.parent / csv_path) == got.companions.baseline
    assert got.companions.recording.stat().st_size < 8_000_000


@pytest.mark.parametrize("name", NAMES)
def test_seed_facts(name: str) -> None:
    """35 brands over the scaled ¥100M; room traffic +40% (±2 points);
    flash-sale orders more than 2x; conversion +15%; every reason code."""
    summary = measured(name).summary
    top_fen = max(summary["brands_reached"], key=int)
    assert summary["brands_reached"][top_fen] == 35
    assert abs(summary["livestream"]["growth_pct"] - 40) <= 2
    assert summary["flash_sale"]["ratio"] > 2
    assert abs(summary["conversion"]["growth_pct"] - 15) <= 0.5
    assert set(summary["dead_letters_by_reason"]) == set(reference.REASONS)
    assert summary["out_of_window"] > 0


def test_first_hour_is_calibrated() -> None:
    """first-hour: 5,000 brands at scale 0.0001, 35 over ¥100M x 0.0001 =
    1,000,000 fen, 1,802 doubled, ~55% of the flagship store's orders from
    88VIP: the report's vip_share of brand `apple` (all its skus)."""
    got = measured("first-hour")
    assert got.settings["PRESALE_MILESTONES_FEN"] == "100000,1000000"
    first_hour = got.report["first_hour"]
    assert first_hour["brands_reached"]["1000000"] == 35
    assert first_hour["brands_doubled"] == 1_802
    assert len(got.report["brands"]) == 5_000
    assert abs(got.summary["flagship"]["vip_share_pct"] - 55) <= 5
    apple = next(b for b in got.report["brands"] if b["brand_id"] == "apple")
    assert (apple["orders"], apple["vip_orders"]) == (
        got.summary["flagship"]["orders"],
        got.summary["flagship"]["vip_orders"],
    )
    assert abs(apple["vip_share"] - 0.55) <= 0.02
    assert 100_000 <= got.summary["records"] <= 400_000


def test_first_hour_against_last_year() -> None:
    """first-hour's report carries the published facts against its channel
    CSV: livestream clicks +40%, flash-sale orders 2.3x, conversion +15% in
    total, each within 0.01; 32 regions (the generator's 31 provinces and
    `unknown` for events without one); the latest 60 minutes."""
    report = measured("first-hour").report
    live = report["channels"]["livestream"]["first_hour"]["vs_last_year"]
    flash = report["channels"]["flash_sale"]["first_hour"]["vs_last_year"]
    total = report["first_hour"]["vs_last_year"]
    assert abs(live["clicks"] - 1.4) <= 0.01
    assert abs(flash["orders"] - 2.3) <= 0.01
    assert abs(total["conversion"] - 1.15) <= 0.01
    assert len(report["minutes"]) == 60
    assert len(report["regions"]) == len(generate.REGION_WEIGHTS) + 1


@pytest.mark.parametrize("name", NAMES)
def test_regenerates_byte_for_byte(name: str, tmp_path: Path) -> None:
    """The generator remakes the committed files exactly (same seed, same bytes)."""
    assert generate.main(generate.committed_argv(name, tmp_path)) == 0
    fresh = Companions.beside(tmp_path / f"{name}.jsonl.gz")
    committed = measured(name).companions
    for attribute in (
        "recording",
        "baseline",
        "settings",
        "lastyear",
        "expected",
        "channels",
    ):
        new = getattr(fresh, attribute).read_bytes()
        old = getattr(committed, attribute).read_bytes()
        assert new == old, f"{name}: {attribute} differs from a fresh generation"
