"""deploy/docker-compose.yml, checked statically (no Docker engine here): it
parses, every file it builds from or mounts exists, every command of the presale
image is a real command line, every PRESALE_ variable is a real setting with a
valid value, and Prometheus and Grafana find what is mounted for them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import Settings
from tests.deploy.support import DEPLOY, ROOT, presale_command, setting_names, web_paths

COMPOSE = DEPLOY / "docker-compose.yml"
# Created by the ops views branch; referenced here, present after the merge.
OTHER_BRANCH = ("prometheus/rules.yml", "grafana/presale.json")


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            out.append((source, target))
    return out


def _presale_services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    return {
        name: s
        for name, s in services.items()
        if "build" in s or str(s.get("image", "")).startswith("presale:")
    }


def test_parses_with_every_service() -> None:
    services = _compose()["services"]
    assert {"kafka", "redis", "worker", "replay", "prometheus", "grafana"} <= set(
        services
    )
    assert "${PRESALE_WORKERS:-3}" in str(services["worker"]["deploy"]["replicas"])


def test_build_files_exist() -> None:
    build = _compose()["services"]["worker"]["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    assert context == ROOT
    assert dockerfile.is_file()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (context / source).exists(), f"{dockerfile}: COPY {source}"


def test_mounted_files_exist() -> None:
    """Every bind mount but the two files another branch adds."""
    for name, service in _compose()["services"].items():
        for source, _target in _mounts(service):
            if source.removeprefix("./") in OTHER_BRANCH:
                continue
            assert (COMPOSE.parent / source).exists(), f"{name}: {source}"


@pytest.mark.parametrize("path", OTHER_BRANCH)
def test_files_of_the_ops_branch(path: str) -> None:
    if not (DEPLOY / path).exists():
        pytest.skip(f"deploy/{path} comes from the ops views branch (after merge)")
    if path.endswith(".yml"):
        assert yaml.safe_load((DEPLOY / path).read_text())


def test_presale_commands_are_real() -> None:
    """Each presale-image service's command parses as `presale ...`, and the
    files it names exist in the image (the repository root is its /app)."""
    services = _presale_services()
    assert set(services) == {"worker", "replay"}
    for service in services.values():
        argv = [str(a) for a in service["command"]]
        presale_command(argv)
        for arg in argv:
            if "/" in arg:
                assert (ROOT / arg).is_file(), arg
                assert arg.split("/")[0] in {"seeds", "streams", "processors"}


def test_environment_is_real_settings() -> None:
    for name, service in _presale_services().items():
        env = {k: str(v) for k, v in service["environment"].items()}
        unknown = set(env) - setting_names()
        assert not unknown, (name, unknown)
        settings = Settings.from_env(env, load=False)
        assert settings.topic_partitions == 12
        assert settings.web_host == settings.metrics_host == "0.0.0.0"


def test_healthcheck_path_is_served() -> None:
    test = " ".join(_compose()["services"]["worker"]["healthcheck"]["test"])
    path = re.search(r"http://127\.0\.0\.1:6066(/\w+)", test)
    assert path and path.group(1) in web_paths()
    assert Settings().web_port == 6066


def test_prometheus_and_grafana_find_their_files() -> None:
    services = _compose()["services"]
    mounts = dict((t, s) for s, t in _mounts(services["prometheus"]))
    config = yaml.safe_load(
        (COMPOSE.parent / mounts["/etc/prometheus/prometheus.yml"]).read_text()
    )
    assert set(config["rule_files"]) <= set(mounts)
    (job,) = config["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["port"] == Settings().metrics_port

    mounts = dict((t, s) for s, t in _mounts(services["grafana"]))
    provisioning = COMPOSE.parent / mounts["/etc/grafana/provisioning"]
    (provider,) = yaml.safe_load(
        (provisioning / "dashboards" / "presale.yml").read_text()
    )["providers"]
    dashboards = [t for t in mounts if t.endswith(".json")]
    assert dashboards and all(
        Path(t).parent == Path(provider["options"]["path"]) for t in dashboards
    )
    (source,) = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    assert source["url"] == "http://prometheus:9090"


def test_redis_is_supported_and_requires_auth() -> None:
    """Redis 7.4 or 8.x (7.0 is end of life, without 2025's Lua fixes), with a
    password from the environment that the workers use too (issue 16: compose
    ran redis:7.0 with no AUTH)."""
    services = _compose()["services"]
    redis = services["redis"]
    version = re.fullmatch(r"redis:(\d+)\.(\d+)\.(\d+)", redis["image"])
    assert version, redis["image"]
    major, minor, _ = map(int, version.groups())
    assert (major, minor) >= (7, 4)
    command = " ".join(redis["command"])
    assert "requirepass" in command and "$$REDIS_PASSWORD" in command
    assert "--requirepass" not in command  # not on the command line
    assert redis["environment"]["REDIS_PASSWORD"].startswith(
        "${PRESALE_REDIS_PASSWORD:?"
    )
    assert "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])
    for name, service in _presale_services().items():
        password = service["environment"]["PRESALE_REDIS_PASSWORD"]
        assert password == redis["environment"]["REDIS_PASSWORD"], name


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (its `**`
    matches any number of folders, `*` and `?` stay within one)."""
    for pattern in patterns:
        regex = re.escape(pattern.strip("/"))
        regex = regex.replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if re.fullmatch(regex + "(?:/.*)?", path):
            return True
    return False


def test_the_image_ships_no_recordings() -> None:
    """The recordings (seeds/streams/**/*.jsonl.gz, megabytes) stay out of the
    image; the settings and baselines the worker's command names stay in, and
    the replay job mounts every recording it publishes."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [x.strip() for x in lines if x.strip() and not x.startswith("#")]
    recordings = sorted(ROOT.glob("seeds/streams/**/*.jsonl.gz"))
    assert recordings
    for path in recordings:
        assert _ignored(str(path.relative_to(ROOT)), patterns), path
    for service in _presale_services().values():
        mounts = dict((t, s) for s, t in _mounts(service))
        for arg in map(str, service["command"]):
            if "/" not in arg:
                continue
            if arg.endswith(".jsonl.gz"):
                assert mounts.get(f"/app/{arg}") == f"../{arg}", arg
            else:
                assert not _ignored(arg, patterns), arg
