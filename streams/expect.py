"""The report the independent batch reference computes for a recording."""

from __future__ import annotations

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
    # Imported here, not at the top: streams/ does not import seeds/ when it
    # loads, and only this command needs the reference.
    from seeds import reference

    if not Path(path).is_file():
        msg = f"cannot read {path}: no such file"
        raise RecordingError(msg)
    try:
        return reference.expected_report(
            path, reference_settings(settings), settings_dir=Path.cwd()
        )
    except (OSError, EOFError) as exc:  # EOFError: a gzip cut short
        msg = f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
        raise RecordingError(msg) from exc
    except ValueError as exc:  # seeds.recording.RecordingError names file and line
        raise RecordingError(str(exc)) from exc
