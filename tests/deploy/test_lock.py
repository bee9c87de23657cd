"""The lock files and the aiohttp pin (issue 16): every package the worker and
the tests install is pinned with its hashes, and make, CI and the Dockerfile
install from the lock with --require-hashes. Before the fix there was no lock,
aiohttp (the HTTP server) was not pinned, and `make install` resolved freely.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "requirements.lock"
DEV = ROOT / "requirements-dev.lock"
# aiohttp's 2024-2025 security fixes: 3.9.2 (static path traversal,
# CVE-2024-23334), 3.10.11 (request smuggling, CVE-2024-52304), 3.12.14
# (request smuggling, CVE-2025-53643): the pin must include all of them.
AIOHTTP_FIXED = (3, 12, 14)


def _pins(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of a pip-compile lock."""
    pins: dict[str, tuple[str, int]] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        found = re.match(r"([A-Za-z0-9_.-]+)==([^ ;]+)", line)
        assert found, line
        name = found.group(1).lower().replace("_", "-")
        pins[name] = (found.group(2), line.count("--hash=sha256:"))
    return pins


def _project() -> dict[str, list[str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {"": data["dependencies"], "test": data["optional-dependencies"]["test"]}


@pytest.mark.parametrize("lock", [RUNTIME, DEV], ids=["runtime", "dev"])
def test_every_package_is_pinned_with_hashes(lock: Path) -> None:
    pins = _pins(lock)
    assert len(pins) > 20
    for name, (_version, hashes) in pins.items():
        assert hashes >= 1, name


def test_locks_agree_with_pyproject_and_each_other() -> None:
    runtime, dev = _pins(RUNTIME), _pins(DEV)
    for name, (version, _) in runtime.items():
        assert dev.get(name, ("", 0))[0] == version, name
    groups = _project()
    for group, requirements in groups.items():
        for req in requirements:
            name, version = req.split("==")
            name = name.lower().replace("_", "-")
            assert dev[name][0] == version, req
            if not group:
                assert runtime[name][0] == version, req
            if group == "test":
                assert name not in runtime, name  # the image carries no test tools


def test_aiohttp_is_pinned_with_the_fixes() -> None:
    (pin,) = [r for r in _project()[""] if r.startswith("aiohttp==")]
    version = tuple(int(p) for p in pin.split("==")[1].split("."))
    assert version >= AIOHTTP_FIXED
    # and it is the one installed, the one the suite runs on
    assert metadata.version("aiohttp") == pin.split("==")[1]


def test_make_and_the_image_install_from_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r requirements-dev.lock" in makefile
    assert "--no-deps -e ." in makefile
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in dockerfile
    assert "COPY pyproject.toml README.md requirements.lock" in dockerfile
    assert "pip install --no-deps ." in dockerfile
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci  # make test runs make install
