"""A seeded corpus of malformed records, mixed into a recording for fuzz tests.

Each bad record is made from a valid event by one mutation of a kind the
contract must reject: broken JSON, wrong types, missing fields, huge strings,
negative and fractional money, booleans as strings, the wrong type for the
topic, invalid UTF-8, records near Kafka's 1 MB limit, random bytes. Whether a
record is bad, and why, is decided by the independent batch reference, not here.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

T0 = 1_760_529_600_000
TOPIC_OF = {"click": "clicks", "cart": "carts", "order": "orders", "cancel": "orders"}
WRONG_TOPIC = {
    "click": "orders",
    "cart": "clicks",
    "order": "carts",
    "cancel": "clicks",
}
BASE = ("event_id", "type", "ts", "user_id", "brand_id")
MONEY = ("order_id", "amount_fen")
REQUIRED = {"click": BASE, "cart": BASE, "order": BASE + MONEY, "cancel": BASE + MONEY}
INTEGERS = {"ts", "amount_fen"}
# Values of the wrong JSON type, or out of range, for a string or an integer field.
NOT_STRINGS: list[Any] = [True, False, 1.5, -1, 7, "", "x" * 200, [], {}]
NOT_INTEGERS: list[Any] = [True, False, 1.5, -1, "", "17", [], {}, 2.0]


def _event(rng: random.Random, i: int) -> dict[str, Any]:
    kind = rng.choice(["click", "click", "cart", "order", "cancel"])
    e: dict[str, Any] = {
        "event_id": f"fz{i}",
        "type": kind,
        "ts": T0 + rng.randrange(3_600_000),
        "user_id": f"fu{rng.randrange(1000)}",
        "brand_id": f"fb{rng.randrange(50)}",
        "channel": rng.choice(["search", "store", "detail"]),
    }
    if kind in ("order", "cancel"):
        e["order_id"] = f"fo{i}"
        e["amount_fen"] = rng.randrange(1, 100_000)
    return e


def _dumps(e: Any) -> bytes:
    return json.dumps(e, separators=(",", ":")).encode()


Mutation = Callable[[random.Random, dict[str, Any]], tuple[str, bytes]]


def _truncated(rng: random.Random, e: dict[str, Any]) -> tuple[str, bytes]:
    raw = _dumps(e)
    return TOPIC_OF[e["type"]], raw[: rng.randrange(1, len(raw) - 1)]


def _wrong_type(rng: random.Random, e: dict[str, Any]) -> tuple[str, bytes]:
    name = rng.choice([k for k in REQUIRED[e["type"]] if k != "type"])
    e[name] = rng.choice(NOT_INTEGERS if name in INTEGERS else NOT_STRINGS)
    return TOPIC_OF[e["type"]], _dumps(e)


def _missing(rng: random.Random, e: dict[str, Any]) -> tuple[str, bytes]:
    name = rng.choice(REQUIRED[e["type"]])
    if rng.random() < 0.5:
        del e[name]
    else:
        e[name] = None
    return (TOPIC_OF.get(e.get("type", ""), "clicks")), _dumps(e)


def _huge(rng: random.Random, e: dict[str, Any]) -> tuple[str, bytes]:
    name = rng.choice(["user_id", "brand_id", "event_id", "sku_id", "region"])
    e[name] = "h" * rng.choice([129, 1_000, 60_000, 70_000])
    return TOPIC_OF[e["type"]], _dumps(e)


def _money(rng: random.Random, e: dict[str, Any]) -> tuple[str, bytes]:
    e["type"] = rng.choice(["order", "cancel"])
    e.setdefault("order_id", "fo-money")
    e["amount_fen"] = rng.choice([-1, -100_000, 12.5, 0.01, 1e3, 10**13, "100"])
    return "orders", _dumps(e)


def _bool_string(rng: random.Random, e: dict[str, Any]) -> tuple[str, bytes]:
    e["vip"] = rng.choice(["true", "false", 1, 0, "yes"])
    return TOPIC_OF[e["type"]], _dumps(e)


def _wrong_topic(rng: random.Random, e: dict[str, Any]) -> tuple[str, bytes]:
    return WRONG_TOPIC[e["type"]], _dumps(e)


def _bad_utf8(rng: random.Random, e: dict[str, Any]) -> tuple[str, bytes]:
    raw = bytearray(_dumps(e))
    at = rng.randrange(len(raw))
    raw[at:at] = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80\x80"])
    return TOPIC_OF[e["type"]], bytes(raw)


def _random_bytes(rng: random.Random, e: dict[str, Any]) -> tuple[str, bytes]:
    return rng.choice(list(TOPIC_OF.values())), rng.randbytes(rng.randrange(1, 64))


def _enum(rng: random.Random, e: dict[str, Any]) -> tuple[str, bytes]:
    choice = rng.randrange(3)
    if choice == 0:
        e["channel"] = rng.choice(["tv", "LIVESTREAM", ""])
    elif choice == 1:
        e["channel"] = "livestream"  # without room_id
    else:
        e["qty"] = rng.choice([0, -3, 2_000_000])
    return TOPIC_OF[e["type"]], _dumps(e)


def _not_object(rng: random.Random, e: dict[str, Any]) -> tuple[str, bytes]:
    return TOPIC_OF[e["type"]], _dumps(rng.choice([[e], "click", 42, None, True]))


MUTATIONS: list[Mutation] = [
    _truncated,
    _wrong_type,
    _missing,
    _huge,
    _money,
    _bool_string,
    _wrong_topic,
    _bad_utf8,
    _random_bytes,
    _enum,
    _not_object,
]


def bad_records(n: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """`n` (topic, value) records, each one mutation away from a valid event."""
    rng = random.Random(seed)
    for i in range(n):
        mutation = MUTATIONS[i % len(MUTATIONS)]
        yield mutation(rng, _event(rng, i))


def near_limit_records() -> Iterator[tuple[str, bytes]]:
    """A few records just under Kafka's default 1 MB message limit."""
    for i, size in enumerate((900_000, 1_000_000 - 2_000)):
        e = _event(random.Random(i), 10**9 + i)
        e["pad"] = "p" * size
        yield TOPIC_OF[e["type"]], _dumps(e)


def write_mixed(good: Path, out: Path, n_bad: int, seed: int) -> int:
    """Interleave `good`'s lines with `n_bad` bad records (as raw_b64 envelopes)."""
    rng = random.Random(seed)
    with gzip.open(good, "rb") as f:
        good_lines = [line.rstrip(b"\n") for line in f if line.strip()]
    bad = list(bad_records(n_bad, seed)) + list(near_limit_records())
    slots = sorted(rng.randrange(len(good_lines) + 1) for _ in bad)
    with gzip.open(out, "wb", compresslevel=1) as f:
        b = 0
        for i, line in enumerate([*good_lines, None]):
            while b < len(bad) and slots[b] == i:
                topic, value = bad[b]
                env = {"topic": topic, "raw_b64": base64.b64encode(value).decode()}
                f.write(json.dumps(env).encode() + b"\n")
                b += 1
            if line is not None:
                f.write(line + b"\n")
    return len(bad)
