"""The benchmark workload: copies of the first-hour recording with fresh ids.

Each copy of `seeds/streams/first-hour.jsonl.gz` (135,534 records: 69% clicks,
12% carts, 10% orders, 0.5% malformed, 1.5% producer duplicates) gets a copy tag
appended to every valid event's `event_id` and `order_id`, so copies never
deduplicate against each other while the duplicates *inside* a copy (producer
retries, re-sent orders, cancels sent twice) still do: dedupe does real work.
Malformed records are kept byte for byte (their share stays 0.5%). A record's
key is its `user_id` (as `presale replay` sends it) and its partition is
Kafka's default murmur2 of that key, computed once per base record.

The base is parsed and checked once by the independent batch reference
(`seeds/reference.py`) and cached under `var/bench/`; a copy is then a few byte
joins per record, so 10M records are made in seconds.
"""

from __future__ import annotations

import json
import marshal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from aiokafka.partitioner import murmur2

from seeds import reference
from streams.recordings import iter_records

REPO: Final = Path(__file__).resolve().parent.parent
BASE: Final = REPO / "seeds" / "streams" / "first-hour.jsonl.gz"
BASE_SETTINGS: Final = REPO / "seeds" / "streams" / "first-hour.settings.json"
CACHE_DIR: Final = REPO / "var" / "bench"
CACHE_VERSION: Final = 2
TOPICS: Final = ("clicks", "carts", "orders")
PARTITIONS: Final = 6

# A base record split around the ids to tag: value = parts[0] + tag + parts[1]
# + tag + ... ; one part means nothing to tag (a malformed record).
Parts = tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class BaseRecord:
    topic: int  # index into TOPICS
    partition: int
    key: bytes | None
    parts: Parts  # the value, split where the copy tag goes
    # For the paced load: the value split at the tags and around the ts digits,
    # which are left out; `slots` says what goes between parts ("t" tag, "s" ts).
    # Empty for a malformed record, which is sent as it is.
    paced_parts: Parts
    slots: str


@dataclass(frozen=True, slots=True)
class Totals:
    """What the reference counts for one slice of the workload."""

    records: int
    counted: dict[str, int]  # the report's totals (clicks, orders, gross_gmv_fen...)
    dead_letters: int
    out_of_window: int

    @property
    def duplicates(self) -> int:
        events = sum(self.counted[k] for k in ("clicks", "carts", "orders", "cancels"))
        return self.records - events - self.dead_letters - self.out_of_window

    def times(self, n: int) -> Totals:
        return Totals(
            self.records * n,
            {k: v * n for k, v in self.counted.items()},
            self.dead_letters * n,
            self.out_of_window * n,
        )


def campaign_env() -> dict[str, str]:
    """The recording's campaign settings, as PRESALE_* variables (absolute paths)."""
    raw = json.loads(BASE_SETTINGS.read_text())
    env = {k: str(v) for k, v in raw.items()}
    for name in ("PRESALE_BASELINE_CSV", "PRESALE_CHANNEL_BASELINE_CSV"):
        if name in raw:
            env[name] = str(BASE_SETTINGS.parent / raw[name])
    return env


def _cuts(value: bytes, needles: list[bytes]) -> list[int] | None:
    """Where each needle's closing quote is (each must occur exactly once)."""
    cuts: list[int] = []
    for needle in needles:
        at = value.find(needle)
        if at < 0 or value.find(needle, at + 1) >= 0:
            return None
        cuts.append(at + len(needle) - 1)
    return sorted(cuts)


def _split(value: bytes, spans: list[tuple[int, int]]) -> Parts:
    """`value` without the (start, end) spans, as the parts between them."""
    parts, last = [], 0
    for start, end in sorted(spans):
        parts.append(value[last:start])
        last = end
    parts.append(value[last:])
    return tuple(parts)


def _paced(value: bytes, tag_cuts: list[int], ts_ms: int) -> tuple[Parts, str]:
    needle = b'"ts":' + str(ts_ms).encode()
    at = value.find(needle)
    if at < 0 or value.find(needle, at + 1) >= 0:
        return (), ""
    ts_span = (at + 5, at + len(needle))
    spans = sorted([(c, c) for c in tag_cuts] + [ts_span])
    slots = "".join("s" if span == ts_span else "t" for span in spans)
    return _split(value, spans), slots


def _partition(key: bytes | None, index: int) -> int:
    if key is None:  # Kafka would pick one at random; keep it deterministic
        return index % PARTITIONS
    return (int(murmur2(key)) & 0x7FFFFFFF) % PARTITIONS


def _parse_base() -> list[BaseRecord]:
    campaign = reference.campaign_from_settings(campaign_env())
    out: list[BaseRecord] = []
    for index, (short, key, value) in enumerate(iter_records(BASE)):
        checked = reference.validate(short, value, campaign.max_record_bytes)
        parts: Parts = (value,)
        paced: tuple[Parts, str] = ((), "")
        if not isinstance(checked, str):
            needles = [b'"event_id":' + orjson.dumps(checked.event_id)]
            if checked.order_id is not None:
                needles.append(b'"order_id":' + orjson.dumps(checked.order_id))
            cuts = _cuts(value, needles)
            if cuts is None:  # unusual spacing: re-serialise, then it is exact
                value = orjson.dumps(orjson.loads(value))
                cuts = _cuts(value, needles)
                assert cuts is not None, f"cannot tag record {index}"
            parts = _split(value, [(c, c) for c in cuts])
            paced = _paced(value, cuts, checked.ts_ms)
        out.append(
            BaseRecord(TOPICS.index(short), _partition(key, index), key, parts, *paced)
        )
    return out


def tag(copy: int) -> bytes:
    """What copy `copy` appends to every id: '.<copy in base 36>'."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    n = copy
    while True:
        n, d = divmod(n, 36)
        text = digits[d] + text
        if not n:
            return b"." + text.encode()


def value_of(record: BaseRecord, copy_tag: bytes) -> bytes:
    parts = record.parts
    return parts[0] if len(parts) == 1 else copy_tag.join(parts)


def paced_value(record: BaseRecord, copy_tag: bytes | None, ts: bytes) -> bytes:
    """The record's value with its copy tag and `ts` (ASCII digits) filled in."""
    if copy_tag is None:
        return record.parts[0]
    parts = record.paced_parts
    out = [parts[0]]
    for slot, part in zip(record.slots, parts[1:], strict=True):
        out.append(copy_tag if slot == "t" else ts)
        out.append(part)
    return b"".join(out)


class Workload:
    """The parsed base recording and what the reference counts in it."""

    def __init__(self, base: list[BaseRecord], totals: Totals) -> None:
        self.base = base
        self.base_totals = totals

    @classmethod
    def load(cls) -> Workload:
        """From the cache in var/bench/, made on the first call (about 5 s)."""
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        path = CACHE_DIR / f"base-v{CACHE_VERSION}.marshal"
        stamp = f"{BASE.stat().st_size}:{BASE.stat().st_mtime_ns}"
        if path.exists():
            with path.open("rb") as f:
                data: dict[str, Any] = marshal.load(f)
            if data["stamp"] == stamp:
                return cls._from_data(data)
        started = time.perf_counter()
        base = _parse_base()
        totals = reference_totals((TOPICS[r.topic], value_of(r, tag(0))) for r in base)
        data = {
            "stamp": stamp,
            "records": [
                (r.topic, r.partition, r.key, r.parts, r.paced_parts, r.slots)
                for r in base
            ],
            "totals": [
                totals.records,
                totals.counted,
                totals.dead_letters,
                totals.out_of_window,
            ],
        }
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            marshal.dump(data, f)
        tmp.replace(path)
        print(
            f"workload: parsed and checked the base recording in "
            f"{time.perf_counter() - started:.1f} s (cached in var/bench/)"
        )
        return cls._from_data(data)

    @classmethod
    def _from_data(cls, data: dict[str, Any]) -> Workload:
        base = [BaseRecord(*row) for row in data["records"]]
        records, counted, dead, ow = data["totals"]
        return cls(base, Totals(records, counted, dead, ow))

    def copies_for(self, n_records: int) -> int:
        return -(-n_records // len(self.base))

    def records(
        self, copies: int, first_copy: int = 0
    ) -> Iterator[tuple[int, int, bytes | None, bytes]]:
        """(topic index, partition, key, value) of `copies` copies, in file order."""
        base = self.base
        for copy in range(first_copy, first_copy + copies):
            copy_tag = tag(copy)
            for r in base:
                parts = r.parts
                value = parts[0] if len(parts) == 1 else copy_tag.join(parts)
                yield r.topic, r.partition, r.key, value

    def paced(self, first_copy: int) -> Iterator[tuple[BaseRecord, bytes | None]]:
        """Endless copies for a paced load: (record, tag) with the value to be made
        by `paced_value` at send time; the tag is None for a malformed record."""
        copy = first_copy
        while True:
            copy_tag = tag(copy)
            for r in self.base:
                yield r, (copy_tag if r.slots else None)
            copy += 1

    def totals(self, copies: int) -> Totals:
        return self.base_totals.times(copies)

    def slice_totals(self, n_records: int) -> Totals:
        """The reference's totals of the first `n_records` of copy 0."""
        return reference_totals(
            (TOPICS[r.topic], value_of(r, tag(0))) for r in self.base[:n_records]
        )


def reference_totals(records: Iterator[tuple[str, bytes]]) -> Totals:
    campaign = reference.campaign_from_settings(campaign_env())
    scan = reference.scan_records(((t, None, v) for t, v in records), campaign)
    report = reference.build_report(scan, campaign)
    # buyers are distinct users, the same in every copy: not additive, not checked
    counted = {k: v for k, v in report["totals"].items() if k != "buyers"}
    return Totals(scan.records, counted, report["dead_letters"], scan.out_of_window)
