"""The one settings object, built from the environment in one place."""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from processors.counting import DAY_MS, CampaignRules
from processors.surge import LastYear, SurgeRules, read_surge_baseline
from streams.errors import BaselineError, SettingsError

# The 2025 Double 11 presale: 2025-10-15 20:00 Beijing time to the end of Nov 11.
DEFAULT_START_MS = 1_760_529_600_000
DEFAULT_END_MS = 1_762_876_800_000


def _int(env: Mapping[str, str], name: str, default: int, low: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError as exc:
        msg = f"{name} must be an integer, got {raw!r}"
        raise SettingsError(msg) from exc
    if value < low:
        msg = f"{name} must be at least {low}, got {value}"
        raise SettingsError(msg)
    return value


def _int_list(
    env: Mapping[str, str], name: str, default: tuple[int, ...]
) -> tuple[int, ...]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        values = tuple(
            sorted({int(p.strip().replace("_", "")) for p in raw.split(",")})
        )
    except ValueError as exc:
        msg = f"{name} must be a comma list of integers (fen), got {raw!r}"
        raise SettingsError(msg) from exc
    if any(v <= 0 for v in values):
        msg = f"{name} thresholds must be positive, got {raw!r}"
        raise SettingsError(msg)
    return values


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw.strip())
    except ValueError as exc:
        msg = f"{name} must be a number, got {raw!r}"
        raise SettingsError(msg) from exc


def _surge_rules(env: Mapping[str, str]) -> SurgeRules:
    d = SurgeRules()
    try:
        return SurgeRules(
            ratio=_float(env, "PRESALE_SURGE_RATIO", d.ratio),
            critical_ratio=_float(
                env, "PRESALE_SURGE_CRITICAL_RATIO", d.critical_ratio
            ),
            min_count=_int(env, "PRESALE_SURGE_MIN_COUNT", d.min_count, low=1),
            min_baseline=_float(env, "PRESALE_SURGE_MIN_BASELINE", d.min_baseline),
            history_minutes=_int(
                env, "PRESALE_SURGE_HISTORY_MINUTES", d.history_minutes, low=1
            ),
            persistence_minutes=_int(
                env, "PRESALE_SURGE_PERSISTENCE_MINUTES", d.persistence_minutes, low=1
            ),
            min_z=_float(env, "PRESALE_SURGE_MIN_Z", d.min_z),
            cooldown_minutes=_int(
                env, "PRESALE_SURGE_COOLDOWN_MINUTES", d.cooldown_minutes, low=1
            ),
        )
    except ValueError as exc:  # SurgeRules names every field that is off
        msg = str(exc)
        for name in sorted(SurgeRules.__dataclass_fields__, key=len, reverse=True):
            msg = re.sub(rf"\b{name} must", f"PRESALE_SURGE_{name.upper()} must", msg)
        raise SettingsError(msg) from exc


def load_surge_baseline(path: str) -> LastYear:
    """Read last year's per-minute traffic, CSV `scope,key,minute,count`."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        msg = f"cannot read surge baseline CSV {path}: {exc.strerror or exc}"
        raise BaselineError(msg) from exc
    except UnicodeDecodeError as exc:
        msg = f"surge baseline CSV {path} is not UTF-8 text"
        raise BaselineError(msg) from exc
    try:
        return read_surge_baseline(text)
    except ValueError as exc:
        raise BaselineError(f"{path}: {exc}") from exc


def load_baseline(path: str) -> dict[str, int]:
    """Read `brand_id,first_hour_gmv_fen` (header line optional)."""
    baselines: dict[str, int] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # Excel adds a BOM
            for line_no, row in enumerate(csv.reader(f), start=1):
                if not row or (line_no == 1 and row[0].strip() == "brand_id"):
                    continue
                if len(row) != 2:
                    msg = f"{path}:{line_no}: expected brand_id,first_hour_gmv_fen"
                    raise BaselineError(msg)
                try:
                    value = int(row[1])
                except ValueError as exc:
                    msg = f"{path}:{line_no}: first_hour_gmv_fen must be an integer"
                    raise BaselineError(msg) from exc
                if value < 0:
                    msg = f"{path}:{line_no}: first_hour_gmv_fen must not be negative"
                    raise BaselineError(msg)
                baselines[row[0].strip()] = value
    except OSError as exc:
        msg = f"cannot read baseline CSV {path}: {exc.strerror or exc}"
        raise BaselineError(msg) from exc
    except UnicodeDecodeError as exc:
        msg = f"baseline CSV {path} is not UTF-8 text"
        raise BaselineError(msg) from exc
    return baselines


def read_settings_file(path: str) -> dict[str, str]:
    """A `<recording>.settings.json`: variable names to values."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as exc:
        msg = f"cannot read settings file {path}: {exc}"
        raise SettingsError(msg) from exc
    if not isinstance(raw, dict) or not all(k.startswith("PRESALE_") for k in raw):
        msg = f"settings file {path} must map PRESALE_* variables to values"
        raise SettingsError(msg)
    values = {k: str(v) for k, v in raw.items()}
    for name in ("PRESALE_BASELINE_CSV", "PRESALE_SURGE_BASELINE_CSV"):
        if name in values:
            values[name] = str(Path(path).parent / values[name])
    return values


@dataclass(frozen=True)
class Settings:
    """Every setting of presale; each field's comment names its variable."""

    kafka_bootstrap: str = "localhost:9092"  # PRESALE_KAFKA_BOOTSTRAP
    redis_url: str = "redis://localhost:6379/0"  # PRESALE_REDIS_URL
    campaign_id: str = "d11-2025"  # PRESALE_CAMPAIGN_ID
    start_ms: int = DEFAULT_START_MS  # PRESALE_CAMPAIGN_START_MS
    end_ms: int = DEFAULT_END_MS  # PRESALE_CAMPAIGN_END_MS
    milestones_fen: tuple[int, ...] = (
        1_000_000_000,
        10_000_000_000,
    )  # ..._MILESTONES_FEN
    baseline_csv: str | None = None  # PRESALE_BASELINE_CSV
    yoy_min_baseline_fen: int = 1_000_000  # PRESALE_YOY_MIN_BASELINE_FEN
    topic_prefix: str = "presale"  # PRESALE_TOPIC_PREFIX
    topic_partitions: int = 6  # PRESALE_TOPIC_PARTITIONS (when we create topics)
    web_host: str = "127.0.0.1"  # PRESALE_WEB_HOST
    web_port: int = 6066  # PRESALE_WEB_PORT
    metrics_port: int = 9108  # PRESALE_METRICS_PORT
    dedupe_horizon_ms: int = DAY_MS  # PRESALE_DEDUPE_HORIZON_MS
    dedupe_shards: int = 16_384  # PRESALE_DEDUPE_SHARDS
    max_record_bytes: int = 65_536  # PRESALE_MAX_RECORD_BYTES
    batch_max_records: int = 20_000  # PRESALE_BATCH_MAX_RECORDS
    data_dir: str = "var/faust"  # PRESALE_DATA_DIR (the Faust worker's own files)
    surge: SurgeRules = field(default_factory=SurgeRules)  # PRESALE_SURGE_*
    surge_lateness_ms: int = 30_000  # PRESALE_SURGE_LATENESS_MS
    surge_baseline_csv: str | None = None  # PRESALE_SURGE_BASELINE_CSV
    baselines_fen: Mapping[str, int] = field(default_factory=dict, compare=False)
    surge_last_year: LastYear = field(default_factory=dict, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str], load: bool = True) -> Settings:
        """Build from environment variables; `load` also reads the baseline CSV."""
        d = cls()
        start_ms = _int(env, "PRESALE_CAMPAIGN_START_MS", d.start_ms)
        end_ms = _int(env, "PRESALE_CAMPAIGN_END_MS", max(d.end_ms, start_ms + 1))
        if end_ms <= start_ms:
            msg = (
                f"PRESALE_CAMPAIGN_END_MS ({end_ms}) must be after "
                f"PRESALE_CAMPAIGN_START_MS ({start_ms})"
            )
            raise SettingsError(msg)
        campaign_id = env.get("PRESALE_CAMPAIGN_ID", d.campaign_id).strip()
        if not campaign_id or any(c in campaign_id for c in "{}: \t"):
            msg = f"PRESALE_CAMPAIGN_ID must be a plain name, got {campaign_id!r}"
            raise SettingsError(msg)
        settings = cls(
            kafka_bootstrap=env.get("PRESALE_KAFKA_BOOTSTRAP", d.kafka_bootstrap),
            redis_url=env.get("PRESALE_REDIS_URL", d.redis_url),
            campaign_id=campaign_id,
            start_ms=start_ms,
            end_ms=end_ms,
            milestones_fen=_int_list(env, "PRESALE_MILESTONES_FEN", d.milestones_fen),
            baseline_csv=env.get("PRESALE_BASELINE_CSV") or None,
            yoy_min_baseline_fen=_int(
                env, "PRESALE_YOY_MIN_BASELINE_FEN", d.yoy_min_baseline_fen
            ),
            topic_prefix=env.get("PRESALE_TOPIC_PREFIX", d.topic_prefix),
            topic_partitions=_int(
                env, "PRESALE_TOPIC_PARTITIONS", d.topic_partitions, low=1
            ),
            web_host=env.get("PRESALE_WEB_HOST", d.web_host),
            web_port=_int(env, "PRESALE_WEB_PORT", d.web_port),
            metrics_port=_int(env, "PRESALE_METRICS_PORT", d.metrics_port),
            dedupe_horizon_ms=_int(
                env, "PRESALE_DEDUPE_HORIZON_MS", d.dedupe_horizon_ms, low=1
            ),
            dedupe_shards=_int(env, "PRESALE_DEDUPE_SHARDS", d.dedupe_shards, low=1),
            max_record_bytes=_int(
                env, "PRESALE_MAX_RECORD_BYTES", d.max_record_bytes, low=64
            ),
            batch_max_records=_int(
                env, "PRESALE_BATCH_MAX_RECORDS", d.batch_max_records, low=1
            ),
            data_dir=env.get("PRESALE_DATA_DIR", d.data_dir),
            surge=_surge_rules(env),
            surge_lateness_ms=_int(
                env, "PRESALE_SURGE_LATENESS_MS", d.surge_lateness_ms
            ),
            surge_baseline_csv=env.get("PRESALE_SURGE_BASELINE_CSV") or None,
        )
        if load and settings.baseline_csv:
            settings = replace(
                settings, baselines_fen=load_baseline(settings.baseline_csv)
            )
        if load and settings.surge_baseline_csv:
            settings = replace(
                settings,
                surge_last_year=load_surge_baseline(settings.surge_baseline_csv),
            )
        return settings

    @classmethod
    def load(cls, settings_file: str | None = None, **overrides: Any) -> Settings:
        """Settings from this process's environment, then a recording's settings
        file (JSON of variable -> value, paths relative to it), then CLI flags."""
        env = dict(os.environ)
        if settings_file:
            env.update(read_settings_file(settings_file))
        settings = cls.from_env(env)
        return replace(
            settings, **{k: v for k, v in overrides.items() if v is not None}
        )

    @property
    def redis_prefix(self) -> str:
        # One hash tag per campaign: every key of a batch's atomic step shares a
        # Redis Cluster slot, and two campaigns never mix.
        return f"presale:{{{self.campaign_id}}}:"

    @property
    def app_id(self) -> str:
        return f"presale-{self.campaign_id}"

    def topic(self, short: str) -> str:
        return f"{self.topic_prefix}.{short}"

    @property
    def rules(self) -> CampaignRules:
        return CampaignRules(
            campaign_id=self.campaign_id,
            start_ms=self.start_ms,
            end_ms=self.end_ms,
            thresholds_fen=self.milestones_fen,
            baselines_fen=self.baselines_fen,
            yoy_min_baseline_fen=self.yoy_min_baseline_fen,
            dedupe_horizon_ms=self.dedupe_horizon_ms,
            dedupe_shards=self.dedupe_shards,
        )
