"""The report the independent batch reference computes for a recording."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from streams.errors import RecordingError
from streams.settings import Settings


def reference_settings(settings: Settings) -> dict[str, str]:
    """The variables the reference reads (docs/recordings.md s5), from the one
    settings object rather than from the environment."""
    values = {
        "PRESALE_CAMPAIGN_ID": settings.campaign_id,
        "PRESALE_CAMPAIGN_START_MS": str(settings.start_ms),
        "PRESALE_CAMPAIGN_END_MS": str(settings.end_ms),
        "PRESALE_MILESTONES_FEN": ",".join(map(str, settings.milestones_fen)),
        "PRESALE_YOY_MIN_BASELINE_FEN": str(settings.yoy_min_baseline_fen),
        "PRESALE_MAX_RECORD_BYTES": str(settings.max_record_bytes),
        "PRESALE_DEDUPE_HORIZON_MS": str(settings.dedupe_horizon_ms),
        "PRESALE_MAX_REGIONS": str(settings.max_regions),
    }
    if settings.baseline_csv:
        values["PRESALE_BASELINE_CSV"] = str(Path(settings.baseline_csv).resolve())
    if settings.channel_baseline_csv:
        values["PRESALE_CHANNEL_BASELINE_CSV"] = str(
            Path(settings.channel_baseline_csv).resolve()
        )
    return values


def expected_report(settings: Settings, path: str) -> dict[str, Any]:
    """What `presale expect FILE` prints: the shape of `report --json`, without
    its wall-clock parts (detected_at_ms, alerts, consumer_lag)."""
    if not Path(path).is_file():
        msg = f"cannot read {path}: no such file"
        raise RecordingError(msg)
    # The reference (seeds/reference.py) runs in a process of its own: the
    # service does not import seeds/, and only this command needs it.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "seeds.reference",
            "--settings-json",
            json.dumps(reference_settings(settings)),
            "--settings-dir",
            str(Path.cwd()),
            path,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise RecordingError(lines[-1] if lines else f"cannot read {path}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report
