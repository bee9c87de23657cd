"""Measure a recording's headline facts (SEED_FACTS.md) through the reference.

`python -m seeds.summary seeds/streams/first-hour.jsonl.gz [--json]` reads the
recording and its companion files; `presale seeds generate --summary` prints
the same right after writing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seeds import reference
from streams.recordings import Companions

# Money at --scale 1 of the top threshold (¥100M), to print the scale back.
TOP_THRESHOLD_FEN_AT_SCALE_1 = 10_000_000_000


def _ratio(this_year: float, last_year: float) -> float | None:
    return this_year / last_year if last_year else None


def summary_facts(
    recording: Path,
    report: dict[str, Any],
    facts: dict[str, Any],
    lastyear: dict[str, Any],
    records: int,
    scale: float | None = None,
) -> dict[str, Any]:
    """The summary, from a reference report, the measured facts and last year."""
    reached = report["first_hour"]["brands_reached"]
    if scale is None and reached:
        top_fen = max(int(threshold) for threshold in reached)
        scale = top_fen / TOP_THRESHOLD_FEN_AT_SCALE_1
    last_room = float(lastyear.get("first_hour_livestream_clicks_per_room", 0))
    last_flash = int(lastyear.get("campaign_flash_sale_orders", 0))
    last_conversion = float(lastyear.get("campaign_conversion", 0))
    room_ratio = _ratio(facts["first_hour_livestream_clicks_per_room"], last_room)
    conversion_ratio = _ratio(facts["campaign_conversion"], last_conversion)
    return {
        "recording": str(recording),
        "bytes": recording.stat().st_size,
        "records": records,
        "campaign": report["campaign"],
        "scale": scale,
        "brands": len(report["brands"]),
        "brands_reached": reached,
        "brands_doubled": report["first_hour"]["brands_doubled"],
        "totals": report["totals"],
        "livestream": {
            "rooms": facts["first_hour_livestream_rooms"],
            "clicks": facts["first_hour_livestream_clicks"],
            "clicks_per_room": round(facts["first_hour_livestream_clicks_per_room"], 4),
            "last_year_clicks_per_room": last_room,
            "growth_pct": None
            if room_ratio is None
            else round(100 * (room_ratio - 1), 2),
        },
        "flash_sale": {
            "orders": facts["campaign_flash_sale_orders"],
            "last_year_orders": last_flash,
            "ratio": _round(_ratio(facts["campaign_flash_sale_orders"], last_flash), 3),
        },
        "conversion": {
            "orders": facts["campaign_orders"],
            "clicks": facts["campaign_clicks"],
            "this_year": round(facts["campaign_conversion"], 6),
            "last_year": last_conversion,
            "growth_pct": None
            if conversion_ratio is None
            else round(100 * (conversion_ratio - 1), 2),
        },
        "flagship": {
            "brand_id": facts["flagship_brand_id"],
            "orders": facts["flagship_orders"],
            "vip_orders": facts["flagship_vip_orders"],
            # As the report rounds the brand's vip_share (CONTRACT 3b).
            "vip_share": round(facts["flagship_vip_share"], 3)
            if facts["flagship_orders"]
            else None,
            "vip_share_pct": round(100 * facts["flagship_vip_share"], 2),
        },
        "dead_letters": report["dead_letters"],
        "dead_letters_by_reason": report["dead_letters_by_reason"],
        "out_of_window": report["out_of_window"],
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def summarize(recording: str | Path) -> dict[str, Any]:
    """Read a recording and its companion files; measure its summary."""
    companions = Companions.beside(Path(recording))
    settings = reference.load_settings(companions.settings)
    campaign = reference.campaign_from_settings(settings, companions.settings.parent)
    result = reference.scan(companions.recording, campaign)
    report = reference.build_report(result, campaign)
    facts = reference.measure_facts(result, campaign)
    lastyear: dict[str, Any] = {}
    if companions.lastyear.exists():
        lastyear = json.loads(companions.lastyear.read_text(encoding="utf-8"))
    return summary_facts(companions.recording, report, facts, lastyear, result.records)


def _yuan(fen: int) -> str:
    return f"¥{fen / 100:,.2f}"


def format_summary(summary: dict[str, Any]) -> str:
    """A readable block of the summary."""
    campaign = summary["campaign"]
    totals = summary["totals"]
    live = summary["livestream"]
    flash = summary["flash_sale"]
    conversion = summary["conversion"]
    flagship = summary["flagship"]
    minutes = (campaign["end_ms"] - campaign["start_ms"]) // 60_000
    lines = [
        f"recording      {summary['recording']}: {summary['bytes'] / 1e6:.2f} MB,"
        f" {summary['records']:,} records"
        + (
            f", generated in {summary['generation_seconds']} s"
            if "generation_seconds" in summary
            else ""
        ),
        f"campaign       {campaign['id']}: start {campaign['start_ms']},"
        f" {minutes} min, scale {summary['scale']:g}",
    ]
    for threshold, count in sorted(
        summary["brands_reached"].items(), key=lambda item: -int(item[0])
    ):
        lines.append(
            f"first hour     {count:,} brands reached {_yuan(int(threshold))}"
            f" ({threshold} fen)"
        )
    lines += [
        f"yoy            {summary['brands_doubled']:,} brands doubled last year's"
        " first hour",
        f"livestream     {live['clicks_per_room']:.2f} clicks per room in the first"
        f" hour ({live['clicks']:,} clicks, {live['rooms']:,} rooms) vs"
        f" {live['last_year_clicks_per_room']:.2f} last year:"
        f" {_pct(live['growth_pct'])}",
        f"flash sale     {flash['orders']:,} orders vs {flash['last_year_orders']:,}"
        f" last year: {flash['ratio']}x",
        f"conversion     {conversion['this_year']:.4f} orders per click"
        f" ({conversion['orders']:,} / {conversion['clicks']:,}) vs"
        f" {conversion['last_year']:.4f} last year: {_pct(conversion['growth_pct'])}",
        f"flagship       brand {flagship['brand_id']}, all skus:"
        f" {flagship['vip_orders']:,} of {flagship['orders']:,} counted orders from"
        f" 88VIP, vip_share {flagship['vip_share']}",
        f"totals         {summary['brands']:,} brands, {totals['clicks']:,} clicks,"
        f" {totals['carts']:,} carts, {totals['orders']:,} orders,"
        f" {totals['cancels']:,} cancels, {totals['buyers']:,} buyers",
        f"gmv            gross {_yuan(totals['gross_gmv_fen'])},"
        f" net {_yuan(totals['net_gmv_fen'])},"
        f" first hour {_yuan(totals['first_hour_gross_gmv_fen'])}",
        f"dead letters   {summary['dead_letters']:,}: "
        + ", ".join(
            f"{code} {n}" for code, n in summary["dead_letters_by_reason"].items()
        ),
        f"out of window  {summary['out_of_window']:,} valid records",
    ]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seeds.summary",
        description="Measure a recording's headline facts through the reference.",
    )
    parser.add_argument("recording", type=Path, nargs="+")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    for path in args.recording:
        summary = summarize(path)
        if args.json:
            print(json.dumps(summary, indent=2, ensure_ascii=False))
        else:
            print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
