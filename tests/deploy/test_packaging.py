"""pyproject.toml ships every file the service reads at run time, and declares
it so that installing prints no warning: each folder of the packages is a
listed package (streams/lua and streams/web hold data only), and every data
file is its package's package-data."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch

from tests.deploy.support import ROOT

SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGES: list[str] = SETUPTOOLS["packages"]
DATA: dict[str, list[str]] = SETUPTOOLS.get("package-data", {})
# Folders of seeds/ that the image and the wheel leave out (seeds/streams: the
# recordings and their companions, read from the repository or mounted).
NOT_SHIPPED = {"seeds.streams", "seeds.streams.surge"}


def _folders() -> list[str]:
    found = []
    for top in ("processors", "streams", "seeds"):
        for folder in [ROOT / top, *sorted((ROOT / top).rglob("*"))]:
            if folder.is_dir() and folder.name != "__pycache__":
                found.append(".".join(folder.relative_to(ROOT).parts))
    return found


def test_every_folder_is_a_listed_package() -> None:
    """A folder under a package that is not listed makes setuptools warn
    (and leaves its files out of the wheel)."""
    missing = [f for f in _folders() if f not in PACKAGES and f not in NOT_SHIPPED]
    assert missing == [], f"add to [tool.setuptools] packages: {missing}"


def test_every_data_file_is_package_data() -> None:
    for package in PACKAGES:
        folder = ROOT.joinpath(*package.split("."))
        for path in folder.iterdir():
            if path.is_file() and path.suffix not in {".py", ".pyc"}:
                patterns = DATA.get(package, [])
                assert any(fnmatch(path.name, p) for p in patterns), (
                    f"{path.relative_to(ROOT)} is not in package-data of {package}"
                )


def test_the_service_data_is_declared() -> None:
    assert {"streams.lua", "streams.web"} <= set(PACKAGES)
    assert DATA["streams.lua"] == ["*.lua"]
    assert DATA["streams.web"] == ["*"]
