"""What the static deployment tests check files against: the real settings, the
real commands and the real web routes of the app."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


@cache
def setting_names() -> frozenset[str]:
    """Every PRESALE_ variable that streams/settings.py reads."""
    source = (ROOT / "streams" / "settings.py").read_text()
    return frozenset(re.findall(r'"(PRESALE_[A-Z0-9_]+)"', source))


@cache
def web_paths() -> frozenset[str]:
    """The paths the worker's Faust web server routes (built, not started)."""
    from streams.app import create_app
    from streams.metrics import Metrics
    from streams.settings import Settings

    app, _runtime = create_app(Settings.from_env({}, load=False), Metrics.create())
    return frozenset(app.web.views)


def presale_command(argv: list[str]) -> None:
    """Fail unless `presale <argv>` parses as a real command line."""
    from streams.cli import parser

    try:
        parser().parse_args(argv)
    except SystemExit as exc:
        msg = f"`presale {' '.join(argv)}` is not a valid command line"
        raise AssertionError(msg) from exc
