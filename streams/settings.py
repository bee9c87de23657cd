"""The one settings object, built from the environment in one place."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from processors.counting import DAY_MS, CampaignRules
from processors.events import CHANNELS
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


def _state_shards(env: Mapping[str, str], default: int) -> int:
    """PRESALE_STATE_SHARDS: 0 (the default for the Redis in use) to 1,024."""
    value = _int(env, "PRESALE_STATE_SHARDS", default, low=0)
    if value > 1_024:
        msg = f"PRESALE_STATE_SHARDS must be at most 1024, got {value}"
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
    text = _read_text(path, "surge baseline CSV", "utf-8")
    try:
        return read_surge_baseline(text)
    except ValueError as exc:
        raise BaselineError(f"{path}: {exc}") from exc


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def _choice(
    env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]
) -> str:
    value = (env.get(name) or default).strip().upper()
    if value not in allowed:
        msg = f"{name} must be one of {', '.join(allowed)}, got {value!r}"
        raise SettingsError(msg)
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw not in _TRUE + _FALSE:
        msg = f"{name} must be 1 or 0 (true or false), got {raw!r}"
        raise SettingsError(msg)
    return raw in _TRUE


def _file(env: Mapping[str, str], name: str) -> str | None:
    path = env.get(name) or None
    if path is not None and not Path(path).is_file():
        msg = f"{name}: no such file {path!r}"
        raise SettingsError(msg)
    return path


# redis-py also reads a password from the query (`redis://h/0?password=s`).
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """A URL with its password replaced by ***, for messages and repr: the one
    in the authority and any `password=` of the query."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return "<unparsable URL>"
    masked = url.replace(f":{password}@", ":***@", 1) if password else url
    return _QUERY_PASSWORD.sub(r"\1***", masked)


def _security(env: Mapping[str, str]) -> dict[str, Any]:
    """The production settings: metrics address, Redis Cluster, AUTH and TLS."""
    protocol = _choice(
        env, "PRESALE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", KAFKA_SECURITY_PROTOCOLS
    )
    out: dict[str, Any] = {
        "metrics_host": env.get("PRESALE_METRICS_HOST")
        or env.get("PRESALE_WEB_HOST")
        or "127.0.0.1",
        "redis_cluster": _bool(env, "PRESALE_REDIS_CLUSTER"),
        "redis_username": env.get("PRESALE_REDIS_USERNAME") or None,
        "redis_password": env.get("PRESALE_REDIS_PASSWORD") or None,
        "redis_tls_ca_file": _file(env, "PRESALE_REDIS_TLS_CA_FILE"),
        "kafka_security_protocol": protocol,
        "kafka_sasl_mechanism": _choice(
            env, "PRESALE_KAFKA_SASL_MECHANISM", "PLAIN", KAFKA_SASL_MECHANISMS
        ),
        "kafka_sasl_username": env.get("PRESALE_KAFKA_SASL_USERNAME") or None,
        "kafka_sasl_password": env.get("PRESALE_KAFKA_SASL_PASSWORD") or None,
        "kafka_tls_ca_file": _file(env, "PRESALE_KAFKA_TLS_CA_FILE"),
        "kafka_tls_cert_file": _file(env, "PRESALE_KAFKA_TLS_CERT_FILE"),
        "kafka_tls_key_file": _file(env, "PRESALE_KAFKA_TLS_KEY_FILE"),
    }
    if protocol.startswith("SASL_") and not (
        out["kafka_sasl_username"] and out["kafka_sasl_password"]
    ):
        msg = (
            f"PRESALE_KAFKA_SECURITY_PROTOCOL={protocol} needs "
            "PRESALE_KAFKA_SASL_USERNAME and PRESALE_KAFKA_SASL_PASSWORD"
        )
        raise SettingsError(msg)
    if bool(out["kafka_tls_cert_file"]) != bool(out["kafka_tls_key_file"]):
        msg = "PRESALE_KAFKA_TLS_CERT_FILE and PRESALE_KAFKA_TLS_KEY_FILE go together"
        raise SettingsError(msg)
    return out


def _read_text(path: str, what: str, encoding: str) -> str:
    """A settings file's text, or one readable line naming what went wrong."""
    try:
        with open(path, newline="", encoding=encoding) as f:
            return f.read()
    except OSError as exc:
        msg = f"cannot read {what} {path}: {exc.strerror or exc}"
        raise BaselineError(msg) from exc
    except UnicodeDecodeError as exc:
        msg = f"{what} {path} is not UTF-8 text"
        raise BaselineError(msg) from exc


def load_baseline(path: str) -> dict[str, int]:
    """Read `brand_id,first_hour_gmv_fen` (header line optional)."""
    baselines: dict[str, int] = {}
    text = _read_text(path, "baseline CSV", "utf-8-sig")  # Excel adds a BOM
    for line_no, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
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
    return baselines


CHANNEL_BASELINE_HEADER: Final = (
    "channel",
    "first_hour_clicks",
    "first_hour_orders",
    "first_hour_gross_gmv_fen",
)


def load_channel_baseline(path: str) -> dict[str, tuple[int, int, int]]:
    """Read `channel,first_hour_clicks,first_hour_orders,first_hour_gross_gmv_fen`
    (header line optional): last year's first hour per channel."""
    rows: dict[str, tuple[int, int, int]] = {}
    text = _read_text(path, "channel baseline CSV", "utf-8-sig")
    for line_no, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if not row or (line_no == 1 and row[0].strip() == "channel"):
            continue
        if len(row) != 4:
            msg = f"{path}:{line_no}: expected {','.join(CHANNEL_BASELINE_HEADER)}"
            raise BaselineError(msg)
        channel = row[0].strip()
        if channel not in CHANNELS:
            known = ", ".join(CHANNELS)
            msg = f"{path}:{line_no}: {channel!r} is not a channel ({known})"
            raise BaselineError(msg)
        try:
            values = tuple(int(v) for v in row[1:])
        except ValueError as exc:
            msg = f"{path}:{line_no}: counts and fen must be integers"
            raise BaselineError(msg) from exc
        if min(values) < 0:
            msg = f"{path}:{line_no}: counts and fen must not be negative"
            raise BaselineError(msg)
        rows[channel] = (values[0], values[1], values[2])
    return rows


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
    for name in (
        "PRESALE_BASELINE_CSV",
        "PRESALE_SURGE_BASELINE_CSV",
        "PRESALE_CHANNEL_BASELINE_CSV",
    ):
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
    dedupe_shards: int = 1_024  # PRESALE_DEDUPE_SHARDS
    # Shards of a campaign's state, each in its own Redis Cluster slot
    # (streams/keys.py); 0 picks 1 on one Redis and 12 on a Redis Cluster.
    state_shards: int = 0  # PRESALE_STATE_SHARDS
    max_record_bytes: int = 65_536  # PRESALE_MAX_RECORD_BYTES
    batch_max_records: int = 40_000  # PRESALE_BATCH_MAX_RECORDS
    # How long the broker may hold a fetch that finds no new data (Faust fixes
    # 1,500 ms; streams/batching.py): a fetch of drained partitions holds up
    # the next one of partitions that do have data, the worker then starves.
    fetch_max_wait_ms: int = 20  # PRESALE_FETCH_MAX_WAIT_MS
    data_dir: str = "var/faust"  # PRESALE_DATA_DIR (the Faust worker's own files)
    surge: SurgeRules = field(default_factory=SurgeRules)  # PRESALE_SURGE_*
    surge_lateness_ms: int = 30_000  # PRESALE_SURGE_LATENESS_MS
    surge_baseline_csv: str | None = None  # PRESALE_SURGE_BASELINE_CSV
    # Distinct brands and livestream rooms past which `PresaleTooManyIds` fires:
    # 1,000,000 brands is what docs/performance.md measured within the limits
    # (worker under 512 MiB, report --top 10 under 5 s); rooms are one cell a
    # minute each in the surge hashes, as brands are.
    max_brands: int = 1_000_000  # PRESALE_MAX_BRANDS
    max_rooms: int = 1_000_000  # PRESALE_MAX_ROOMS
    channel_baseline_csv: str | None = None  # PRESALE_CHANNEL_BASELINE_CSV
    # Regions kept apart per campaign; later new ones count under `other`: 64
    # covers China's 34 provincial regions with room for overseas codes.
    max_regions: int = 64  # PRESALE_MAX_REGIONS
    # Production: address of the metrics port, Redis Cluster, Redis and Kafka
    # authentication and TLS (streams/connect.py builds the clients from them).
    metrics_host: str = "127.0.0.1"  # PRESALE_METRICS_HOST (PRESALE_WEB_HOST if unset)
    redis_cluster: bool = False  # PRESALE_REDIS_CLUSTER (1: the URL is a cluster node)
    redis_username: str | None = None  # PRESALE_REDIS_USERNAME (over the URL's)
    redis_password: str | None = field(default=None, repr=False)  # ..._REDIS_PASSWORD
    redis_tls_ca_file: str | None = None  # PRESALE_REDIS_TLS_CA_FILE (rediss://)
    kafka_security_protocol: str = "PLAINTEXT"  # PRESALE_KAFKA_SECURITY_PROTOCOL
    kafka_sasl_mechanism: str = "PLAIN"  # PRESALE_KAFKA_SASL_MECHANISM
    kafka_sasl_username: str | None = None  # PRESALE_KAFKA_SASL_USERNAME
    kafka_sasl_password: str | None = field(default=None, repr=False)  # ..._PASSWORD
    kafka_tls_ca_file: str | None = None  # PRESALE_KAFKA_TLS_CA_FILE
    kafka_tls_cert_file: str | None = None  # PRESALE_KAFKA_TLS_CERT_FILE (mutual TLS)
    kafka_tls_key_file: str | None = None  # PRESALE_KAFKA_TLS_KEY_FILE
    baselines_fen: Mapping[str, int] = field(default_factory=dict, compare=False)
    surge_last_year: LastYear = field(default_factory=dict, compare=False)
    channel_baselines: Mapping[str, tuple[int, int, int]] = field(
        default_factory=dict, compare=False
    )

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
            state_shards=_state_shards(env, d.state_shards),
            max_record_bytes=_int(
                env, "PRESALE_MAX_RECORD_BYTES", d.max_record_bytes, low=64
            ),
            batch_max_records=_int(
                env, "PRESALE_BATCH_MAX_RECORDS", d.batch_max_records, low=1
            ),
            fetch_max_wait_ms=_int(
                env, "PRESALE_FETCH_MAX_WAIT_MS", d.fetch_max_wait_ms, low=0
            ),
            data_dir=env.get("PRESALE_DATA_DIR", d.data_dir),
            surge=_surge_rules(env),
            surge_lateness_ms=_int(
                env, "PRESALE_SURGE_LATENESS_MS", d.surge_lateness_ms
            ),
            surge_baseline_csv=env.get("PRESALE_SURGE_BASELINE_CSV") or None,
            max_brands=_int(env, "PRESALE_MAX_BRANDS", d.max_brands, low=1),
            max_rooms=_int(env, "PRESALE_MAX_ROOMS", d.max_rooms, low=1),
            channel_baseline_csv=env.get("PRESALE_CHANNEL_BASELINE_CSV") or None,
            max_regions=_int(env, "PRESALE_MAX_REGIONS", d.max_regions, low=1),
            **_security(env),
        )
        if load and settings.baseline_csv:
            settings = replace(
                settings, baselines_fen=load_baseline(settings.baseline_csv)
            )
        if load and settings.channel_baseline_csv:
            settings = replace(
                settings,
                channel_baselines=load_channel_baseline(settings.channel_baseline_csv),
            )
        if load and settings.surge_baseline_csv:
            settings = replace(
                settings,
                surge_last_year=load_surge_baseline(settings.surge_baseline_csv),
            )
        return settings

    def __repr__(self) -> str:
        # Secrets never reach a log: passwords are masked, in the URL too.
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "redis_url":
                value = mask_url(value)
            elif not f.repr:
                value = "***" if value else value
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

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
    def shards(self) -> int:
        """The state shards in use: PRESALE_STATE_SHARDS, or by default 1 on one
        Redis and 12 on a Redis Cluster (an even share for 1, 2, 3, 4, 6 or 12
        masters)."""
        if self.state_shards:
            return self.state_shards
        return 12 if self.redis_cluster else 1

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
            state_shards=self.shards,
            max_regions=self.max_regions,
            channel_baselines=self.channel_baselines,
        )

    def pinned_rules(self) -> dict[str, str]:
        """The rules every worker of a campaign must share, by the variable that
        sets each: the first worker stores them in Redis, and a worker whose own
        differ refuses to start (streams/store.py:RedisStore.pin_rules). Two
        workers with different shard counts, horizons, windows or thresholds
        would each count by their own rules and silently corrupt the campaign."""
        surge = self.surge
        return {
            "PRESALE_CAMPAIGN_START_MS": str(self.start_ms),
            "PRESALE_CAMPAIGN_END_MS": str(self.end_ms),
            "PRESALE_MILESTONES_FEN": ",".join(map(str, self.milestones_fen)),
            "PRESALE_YOY_MIN_BASELINE_FEN": str(self.yoy_min_baseline_fen),
            "PRESALE_BASELINE_CSV": _digest(sorted(self.baselines_fen.items())),
            "PRESALE_DEDUPE_HORIZON_MS": str(self.dedupe_horizon_ms),
            "PRESALE_DEDUPE_SHARDS": str(self.dedupe_shards),
            "PRESALE_STATE_SHARDS": str(self.shards),
            "PRESALE_SURGE_*": ",".join(
                f"{name}={getattr(surge, name)}"
                for name in sorted(SurgeRules.__dataclass_fields__)
            ),
            "PRESALE_SURGE_LATENESS_MS": str(self.surge_lateness_ms),
            "PRESALE_SURGE_BASELINE_CSV": _digest(
                sorted((repr(k), v) for k, v in self.surge_last_year.items())
            ),
            "PRESALE_MAX_REGIONS": str(self.max_regions),
            "PRESALE_CHANNEL_BASELINE_CSV": _digest(
                sorted(self.channel_baselines.items())
            ),
        }


def _digest(items: list[tuple[Any, Any]]) -> str:
    """A short fingerprint of a loaded file's contents (empty: none loaded)."""
    if not items:
        return "none"
    text = "\n".join(f"{k},{v}" for k, v in items)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
