"""processors/ stays pure: it imports nothing of the stream, store or wire layers.
streams/ (the service) imports nothing of seeds/ (the generator and the batch
reference): seeds/ may use streams/, never the other way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCESSORS = ROOT / "processors"
STREAMS = ROOT / "streams"
PACKAGE = "processors"
# STYLE.md: processors import nothing of these; `streams` is the layer above.
FORBIDDEN = frozenset(
    {"faust", "redis", "aiokafka", "prometheus_client", "orjson", "mode", "streams"}
)
# The service's own reader is streams/recordings.py; seeds/ is not installed for it.
STREAMS_FORBIDDEN = frozenset({"seeds"})


def _absolute(module: str | None, level: int, package: str) -> str:
    """The absolute name of `from <level dots><module> import ...` in `package`."""
    if level == 0:
        return module or ""
    parts = package.split(".")
    if level > len(parts):
        return "<outside the tree>"
    base = parts[: len(parts) - level + 1]
    return ".".join([*base, module] if module else base)


def forbidden_imports(
    source: str, package: str = PACKAGE, forbidden: frozenset[str] = FORBIDDEN
) -> list[str]:
    """Every forbidden module `source` imports (statements and import calls)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [_absolute(node.module, node.level, package)]
        elif isinstance(node, ast.Call):
            func = node.func
            called = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            if (
                called in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names = [node.args[0].value]
        for name in names:
            root = name.split(".")[0]
            if root in forbidden or name == "<outside the tree>":
                found.append(name)
    return found


def _package_of(path: Path) -> str:
    # A module's package is its folder; so is an __init__.py's.
    return ".".join(path.relative_to(ROOT).parent.parts)


SOURCES = sorted(PROCESSORS.rglob("*.py"))
STREAMS_SOURCES = sorted(STREAMS.rglob("*.py"))


def test_processors_has_sources() -> None:
    """The walk sees the real package (events, counting, milestones, state at
    least), so the layering test below cannot pass vacuously."""
    names = {p.name for p in SOURCES}
    assert {"events.py", "counting.py", "milestones.py", "state.py"} <= names


@pytest.mark.parametrize(
    "path", SOURCES, ids=[str(p.relative_to(PROCESSORS)) for p in SOURCES]
)
def test_no_forbidden_import(path: Path) -> None:
    """This processors/ module imports none of faust, redis, aiokafka,
    prometheus_client, orjson, mode or anything under streams/."""
    source = path.read_text(encoding="utf-8")
    assert forbidden_imports(source, _package_of(path)) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import faust", ["faust"]),
        ("import redis.asyncio as r", ["redis.asyncio"]),
        ("from aiokafka.structs import TopicPartition", ["aiokafka.structs"]),
        ("import os, prometheus_client", ["prometheus_client"]),
        ("from orjson import loads", ["orjson"]),
        ("from mode import Service", ["mode"]),
        ("from streams.store import MemoryStore", ["streams.store"]),
        ("import streams", ["streams"]),
        ("from ..streams import codecs", ["<outside the tree>"]),
        ("from ... import anything", ["<outside the tree>"]),
        ("import importlib\nimportlib.import_module('orjson')", ["orjson"]),
        ("__import__('faust.types')", ["faust.types"]),
        ("def f():\n    import redis\n", ["redis"]),
        ("if False:\n    from faust import App\n", ["faust"]),
        # allowed: the standard library, processors itself, look-alike names
        ("import json, hashlib, dataclasses", []),
        ("from processors.events import Event", []),
        ("from .events import Event", []),
        ("from . import milestones", []),
        ("import streamsx, redisearch_like, moded", []),
    ],
)
def test_checker_flags(source: str, expected: list[str]) -> None:
    """The checker itself finds each kind of forbidden import (top level, nested,
    relative, dynamic) and lets the standard library and processors through."""
    assert forbidden_imports(source, "processors") == expected


def test_streams_has_sources() -> None:
    """The walk sees the service's modules, the recording reader among them."""
    names = {p.name for p in STREAMS_SOURCES}
    assert {"app.py", "pipeline.py", "replay.py", "recordings.py"} <= names


@pytest.mark.parametrize(
    "path",
    STREAMS_SOURCES,
    ids=[str(p.relative_to(STREAMS)) for p in STREAMS_SOURCES],
)
def test_streams_does_not_import_seeds(path: Path) -> None:
    """This streams/ module imports nothing under seeds/, not even lazily
    inside a function: the service reads recordings with streams/recordings.py."""
    source = path.read_text(encoding="utf-8")
    found = forbidden_imports(source, _package_of(path), STREAMS_FORBIDDEN)
    assert found == [], f"{path.relative_to(ROOT)} imports {found}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from seeds.recording import iter_records", ["seeds.recording"]),
        ("def f():\n    from seeds import reference\n", ["seeds"]),
        ("import seeds.generate", ["seeds.generate"]),
        ("importlib.import_module('seeds.reference')", ["seeds.reference"]),
        ("from ..seeds import recording", ["<outside the tree>"]),
        # allowed: the service's own modules and the libraries it runs on
        ("from streams.recordings import iter_entries", []),
        ("from .errors import RecordingError", []),
        ("import faust, redis, seedsx", []),
    ],
)
def test_streams_checker_flags(source: str, expected: list[str]) -> None:
    assert forbidden_imports(source, "streams", STREAMS_FORBIDDEN) == expected
