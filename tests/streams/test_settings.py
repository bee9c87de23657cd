"""streams.settings: Settings.from_env and the baseline CSV loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from processors.counting import DAY_MS
from streams.errors import BaselineError, PresaleError, SettingsError
from streams.settings import Settings, load_baseline, load_channel_baseline


def test_defaults() -> None:
    """An empty environment gives the documented defaults (CONTRACT section 8):
    localhost Kafka and Redis, prefix presale, thresholds ¥10M and ¥100M."""
    s = Settings.from_env({})
    assert s.kafka_bootstrap == "localhost:9092"
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.topic_prefix == "presale"
    assert s.campaign_id == "d11-2025"
    assert s.milestones_fen == (1_000_000_000, 10_000_000_000)  # ¥10M, ¥100M
    assert s.baseline_csv is None
    assert s.baselines_fen == {}
    assert s.yoy_min_baseline_fen == 1_000_000
    assert s.dedupe_horizon_ms == DAY_MS
    assert s.max_record_bytes == 65_536
    assert s.start_ms < s.end_ms
    assert s == Settings()


def test_empty_values_mean_default() -> None:
    """A variable set to an empty or blank string falls back to its default."""
    env = {
        "PRESALE_CAMPAIGN_START_MS": "",
        "PRESALE_WEB_PORT": "  ",
        "PRESALE_MILESTONES_FEN": "",
        "PRESALE_BASELINE_CSV": "",
    }
    assert Settings.from_env(env) == Settings()


@pytest.mark.parametrize(
    ("variable", "text", "field", "value"),
    [
        ("PRESALE_KAFKA_BOOTSTRAP", "k1:9093,k2:9093", "kafka_bootstrap",
         "k1:9093,k2:9093"),
        ("PRESALE_REDIS_URL", "redis://r:6380/2", "redis_url", "redis://r:6380/2"),
        ("PRESALE_CAMPAIGN_ID", "618-2026", "campaign_id", "618-2026"),
        ("PRESALE_CAMPAIGN_ID", "  x1 ", "campaign_id", "x1"),
        ("PRESALE_CAMPAIGN_START_MS", "1000", "start_ms", 1_000),
        ("PRESALE_CAMPAIGN_END_MS", "1800000000000", "end_ms", 1_800_000_000_000),
        ("PRESALE_MILESTONES_FEN", "500", "milestones_fen", (500,)),
        ("PRESALE_MILESTONES_FEN", "300, 100,200,100", "milestones_fen",
         (100, 200, 300)),
        ("PRESALE_MILESTONES_FEN", "1_000_000_000", "milestones_fen",
         (1_000_000_000,)),
        ("PRESALE_YOY_MIN_BASELINE_FEN", "0", "yoy_min_baseline_fen", 0),
        ("PRESALE_YOY_MIN_BASELINE_FEN", "250", "yoy_min_baseline_fen", 250),
        ("PRESALE_TOPIC_PREFIX", "t42", "topic_prefix", "t42"),
        ("PRESALE_TOPIC_PARTITIONS", "12", "topic_partitions", 12),
        ("PRESALE_WEB_HOST", "0.0.0.0", "web_host", "0.0.0.0"),
        ("PRESALE_WEB_PORT", "7000", "web_port", 7_000),
        ("PRESALE_METRICS_PORT", " 9200 ", "metrics_port", 9_200),
        ("PRESALE_DEDUPE_HORIZON_MS", "60000", "dedupe_horizon_ms", 60_000),
        ("PRESALE_DEDUPE_SHARDS", "64", "dedupe_shards", 64),
        ("PRESALE_MAX_RECORD_BYTES", "1048576", "max_record_bytes", 1_048_576),
        ("PRESALE_BATCH_MAX_RECORDS", "500", "batch_max_records", 500),
        ("PRESALE_DATA_DIR", "var/x", "data_dir", "var/x"),
        ("PRESALE_MAX_REGIONS", "8", "max_regions", 8),
    ],
)  # fmt: skip
def test_each_variable(variable: str, text: str, field: str, value: Any) -> None:
    """Each PRESALE_* variable sets its own field, parsed to its type."""
    s = Settings.from_env({variable: text})
    assert getattr(s, field) == value


def test_rules_follow_settings(tmp_path: Path) -> None:
    """The campaign rules carry the campaign, thresholds, baselines and dedupe
    settings read from the environment."""
    csv_path = tmp_path / "base.csv"
    csv_path.write_text("b1,300\n")
    s = Settings.from_env(
        {
            "PRESALE_CAMPAIGN_ID": "c9",
            "PRESALE_CAMPAIGN_START_MS": "1000",
            "PRESALE_CAMPAIGN_END_MS": "2000",
            "PRESALE_MILESTONES_FEN": "7,8",
            "PRESALE_BASELINE_CSV": str(csv_path),
            "PRESALE_YOY_MIN_BASELINE_FEN": "5",
            "PRESALE_DEDUPE_HORIZON_MS": "10",
            "PRESALE_DEDUPE_SHARDS": "3",
        }
    )
    r = s.rules
    assert (r.campaign_id, r.start_ms, r.end_ms) == ("c9", 1_000, 2_000)
    assert r.thresholds_fen == (7, 8)
    assert dict(r.baselines_fen) == {"b1": 300}
    assert (r.yoy_min_baseline_fen, r.dedupe_horizon_ms, r.dedupe_shards) == (5, 10, 3)


def test_names_from_settings() -> None:
    """Topics take the prefix; Redis keys of one campaign share one hash-tagged
    prefix, so two campaigns never mix."""
    a = Settings.from_env({"PRESALE_TOPIC_PREFIX": "p", "PRESALE_CAMPAIGN_ID": "a"})
    b = Settings.from_env({"PRESALE_CAMPAIGN_ID": "b"})
    assert a.topic("clicks") == "p.clicks"
    assert a.redis_prefix == "presale:{a}:"
    assert not a.redis_prefix.startswith(b.redis_prefix)
    assert not b.redis_prefix.startswith(a.redis_prefix)


def test_end_defaults_after_a_late_start() -> None:
    """A start after the default end, with no end given, still gives a valid
    window (end after start)."""
    s = Settings.from_env({"PRESALE_CAMPAIGN_START_MS": "1900000000000"})
    assert s.end_ms > s.start_ms == 1_900_000_000_000


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PRESALE_CAMPAIGN_START_MS": "abc"}, "PRESALE_CAMPAIGN_START_MS"),
        ({"PRESALE_CAMPAIGN_START_MS": "1.5"}, "PRESALE_CAMPAIGN_START_MS"),
        ({"PRESALE_CAMPAIGN_START_MS": "-1"}, "PRESALE_CAMPAIGN_START_MS"),
        ({"PRESALE_CAMPAIGN_END_MS": "soon"}, "PRESALE_CAMPAIGN_END_MS"),
        ({"PRESALE_CAMPAIGN_START_MS": "2000", "PRESALE_CAMPAIGN_END_MS": "1000"},
         "PRESALE_CAMPAIGN_END_MS"),
        ({"PRESALE_CAMPAIGN_START_MS": "2000", "PRESALE_CAMPAIGN_END_MS": "2000"},
         "PRESALE_CAMPAIGN_END_MS"),
        ({"PRESALE_CAMPAIGN_ID": ""}, "PRESALE_CAMPAIGN_ID"),
        ({"PRESALE_CAMPAIGN_ID": "   "}, "PRESALE_CAMPAIGN_ID"),
        ({"PRESALE_CAMPAIGN_ID": "a b"}, "PRESALE_CAMPAIGN_ID"),
        ({"PRESALE_CAMPAIGN_ID": "a:b"}, "PRESALE_CAMPAIGN_ID"),
        ({"PRESALE_CAMPAIGN_ID": "a}b"}, "PRESALE_CAMPAIGN_ID"),
        ({"PRESALE_CAMPAIGN_ID": "{a"}, "PRESALE_CAMPAIGN_ID"),
        ({"PRESALE_MILESTONES_FEN": "100,x"}, "PRESALE_MILESTONES_FEN"),
        ({"PRESALE_MILESTONES_FEN": "100,,200"}, "PRESALE_MILESTONES_FEN"),
        ({"PRESALE_MILESTONES_FEN": "-5"}, "PRESALE_MILESTONES_FEN"),
        ({"PRESALE_MILESTONES_FEN": "0,100"}, "PRESALE_MILESTONES_FEN"),
        ({"PRESALE_YOY_MIN_BASELINE_FEN": "-1"}, "PRESALE_YOY_MIN_BASELINE_FEN"),
        ({"PRESALE_YOY_MIN_BASELINE_FEN": "1e6"}, "PRESALE_YOY_MIN_BASELINE_FEN"),
        ({"PRESALE_WEB_PORT": "http"}, "PRESALE_WEB_PORT"),
        ({"PRESALE_METRICS_PORT": "-9"}, "PRESALE_METRICS_PORT"),
        ({"PRESALE_TOPIC_PARTITIONS": "0"}, "PRESALE_TOPIC_PARTITIONS"),
        ({"PRESALE_DEDUPE_HORIZON_MS": "0"}, "PRESALE_DEDUPE_HORIZON_MS"),
        ({"PRESALE_DEDUPE_SHARDS": "0"}, "PRESALE_DEDUPE_SHARDS"),
        ({"PRESALE_MAX_RECORD_BYTES": "10"}, "PRESALE_MAX_RECORD_BYTES"),
        ({"PRESALE_BATCH_MAX_RECORDS": "0"}, "PRESALE_BATCH_MAX_RECORDS"),
    ],
)  # fmt: skip
def test_errors_name_the_variable(env: dict[str, str], variable: str) -> None:
    """A bad value raises SettingsError (a PresaleError) with a one-line message
    naming the variable."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    message = str(info.value)
    assert isinstance(info.value, PresaleError)
    assert variable in message
    assert "\n" not in message


# ---------------------------------------------------------------------------
# the baseline CSV


def write(tmp_path: Path, text: str, name: str = "baseline.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("brand_id,first_hour_gmv_fen\nb1,100\nb2,0\n", {"b1": 100, "b2": 0}),
        ("b1,100\nb2,250\n", {"b1": 100, "b2": 250}),  # no header
        ("b1,100", {"b1": 100}),  # no final newline
        ("brand_id,first_hour_gmv_fen\n", {}),  # header only
        ("", {}),
        ("b1,100\n\nb2,7\n", {"b1": 100, "b2": 7}),  # a blank line
        ("\r\n".join(["brand_id,first_hour_gmv_fen", "b1,5", "b2,6"]) + "\r\n",
         {"b1": 5, "b2": 6}),  # CRLF line ends
        ('"b,1",100\n', {"b,1": 100}),  # a quoted brand id
        ("张记,1000000\n", {"张记": 1_000_000}),
    ],
)  # fmt: skip
def test_baseline_csv(tmp_path: Path, text: str, expected: dict[str, int]) -> None:
    """brand_id,first_hour_gmv_fen rows load as a dict; the header is optional."""
    assert load_baseline(write(tmp_path, text)) == expected


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("b1,100\nb2,abc\n", 2),
        ("brand_id,first_hour_gmv_fen\nb1,100\nb2\n", 3),
        ("b1,100,7\n", 1),
        ("b1,-5\n", 1),
        ("b1,1.5\n", 1),
        ("b1,\n", 1),
        ("brand_id,first_hour_gmv_fen\nbrand_id,first_hour_gmv_fen\n", 2),
    ],
)
def test_bad_baseline_row(tmp_path: Path, text: str, line: int) -> None:
    """A bad row raises BaselineError naming file:line, in one line."""
    path = write(tmp_path, text)
    with pytest.raises(BaselineError) as info:
        load_baseline(path)
    assert f"{path}:{line}:" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_baseline_file(tmp_path: Path) -> None:
    """A missing file raises BaselineError naming it."""
    path = str(tmp_path / "nope.csv")
    with pytest.raises(BaselineError) as info:
        load_baseline(path)
    assert path in str(info.value)
    assert "\n" not in str(info.value)


def test_baseline_not_utf8(tmp_path: Path) -> None:
    """A file that is not UTF-8 text raises BaselineError naming it."""
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"caf\xe9,100\n")
    with pytest.raises(BaselineError) as info:
        load_baseline(str(path))
    assert str(path) in str(info.value)


def test_from_env_loads_the_baseline(tmp_path: Path) -> None:
    """PRESALE_BASELINE_CSV is read by from_env; a missing file is a
    BaselineError; load=False leaves the file unread."""
    good = write(tmp_path, "b1,100\n")
    assert Settings.from_env({"PRESALE_BASELINE_CSV": good}).baselines_fen == {
        "b1": 100
    }
    missing = str(tmp_path / "missing.csv")
    with pytest.raises(BaselineError):
        Settings.from_env({"PRESALE_BASELINE_CSV": missing})
    lazy = Settings.from_env({"PRESALE_BASELINE_CSV": missing}, load=False)
    assert (lazy.baseline_csv, lazy.baselines_fen) == (missing, {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("channel,first_hour_clicks,first_hour_orders,first_hour_gross_gmv_fen\n"
         "livestream,100,5,9000\nflash_sale,0,2,300\n",
         {"livestream": (100, 5, 9_000), "flash_sale": (0, 2, 300)}),
        ("search,1,2,3", {"search": (1, 2, 3)}),  # no header, no final newline
        ("", {}),
    ],
)  # fmt: skip
def test_channel_baseline_csv(
    tmp_path: Path, text: str, expected: dict[str, tuple[int, int, int]]
) -> None:
    """channel,first_hour_clicks,first_hour_orders,first_hour_gross_gmv_fen rows
    load per channel; the header is optional."""
    assert load_channel_baseline(write(tmp_path, text)) == expected


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("search,1,2\n", 1),  # a column short
        ("search,1,2,3\ntv,1,2,3\n", 2),  # not a channel
        ("search,1,-2,3\n", 1),
        ("search,1,2,x\n", 1),
    ],
)
def test_bad_channel_baseline_row(tmp_path: Path, text: str, line: int) -> None:
    """A bad row raises BaselineError naming file:line, in one line."""
    path = write(tmp_path, text)
    with pytest.raises(BaselineError) as info:
        load_channel_baseline(path)
    assert f"{path}:{line}:" in str(info.value)
    assert "\n" not in str(info.value)


def test_channel_baseline_and_region_cap_reach_the_rules(tmp_path: Path) -> None:
    """PRESALE_CHANNEL_BASELINE_CSV and PRESALE_MAX_REGIONS reach the campaign
    rules, and both are pinned: a worker with another file or cap differs."""
    path = write(tmp_path, "livestream,10,1,100\n")
    env = {"PRESALE_CHANNEL_BASELINE_CSV": path, "PRESALE_MAX_REGIONS": "5"}
    s = Settings.from_env(env)
    assert dict(s.rules.channel_baselines) == {"livestream": (10, 1, 100)}
    assert s.rules.max_regions == 5
    other = write(tmp_path, "livestream,11,1,100\n", name="other.csv")
    t = Settings.from_env({**env, "PRESALE_CHANNEL_BASELINE_CSV": other})
    u = Settings.from_env({**env, "PRESALE_MAX_REGIONS": "6"})
    name = "PRESALE_CHANNEL_BASELINE_CSV"
    assert s.pinned_rules()[name] != t.pinned_rules()[name]
    assert (
        s.pinned_rules()["PRESALE_MAX_REGIONS"]
        != u.pinned_rules()["PRESALE_MAX_REGIONS"]
    )
