"""Deterministic scope traffic with injected surges, to measure the surge detector.

Two outputs, both from one seeded `random.Random`:

- `count_world(seed)`: per-minute counts of about a hundred scopes of the four
  kinds over four hours (fast; `seeds.surge_eval` runs many of them);
- `stream_world(seed)` / `python -m seeds.surges --out FILE.jsonl.gz`: a valid
  30-minute event stream in the recordings' format (docs/recordings.md), with
  its settings and its ground truth (`<name>.truth.json`), small enough to
  replay through the real worker in an integration test.

The ground truth is what was injected (scope, key, onset minute, kind, whether
it must fire); it never comes from the detector. docs/alerts.md describes the
traffic model.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import random
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from processors.surge import BRAND, CHANNEL, FLASH_SALE_ORDERS, MINUTE_MS, ROOM

# 2025-10-15 20:00 Beijing time, the presale start of the other recordings.
T0_MS = 1_760_529_600_000

STEP = "step"
RAMP = "ramp"
SPIKE = "spike"
SLOW_GROWTH = "slow_growth"
SCHEDULED = "scheduled"  # a step that last year's baseline also holds
KINDS = (STEP, RAMP, SPIKE, SLOW_GROWTH, SCHEDULED)
SHOULD_FIRE = {STEP: True, RAMP: True, SPIKE: False, SLOW_GROWTH: False,
               SCHEDULED: False}  # fmt: skip

ScopeKey = tuple[str, str]


@dataclass(frozen=True)
class Injection:
    """One injected change of a scope's traffic: the ground truth."""

    scope: str
    key: str
    onset_ms: int  # first event-minute of the change
    kind: str
    should_fire: bool
    base_per_minute: float  # the scope's traffic before the change
    peak_ratio: float  # the largest multiple of base_per_minute it reaches
    end_ms: int  # first minute back at the base (the campaign end if never)
    # Scopes whose traffic is a part of the target's and so changes by the same
    # factor (a surging brand's rooms): a should-fire injection may make them
    # fire; a should-not-fire one must not.
    affected: tuple[ScopeKey, ...] = ()


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (the standard library has none): Knuth's product of
    uniforms below a mean of 10, Hormann's PTRS transformed rejection above."""
    if lam <= 0:
        return 0
    if lam < 10:
        limit = math.exp(-lam)
        k, product = 0, rng.random()
        while product > limit:
            k += 1
            product *= rng.random()
        return k
    slam, loglam = math.sqrt(lam), math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2)
    while True:
        u = rng.random() - 0.5
        v = rng.random()
        us = 0.5 - abs(u)
        k = math.floor((2 * a / us + b) * u + lam + 0.43)
        if us >= 0.07 and v <= vr:
            return k
        if k < 0 or (us < 0.013 and v > us):
            continue
        if math.log(v) + math.log(inv_alpha) - math.log(a / (us * us) + b) <= (
            -lam + k * loglam - math.lgamma(k + 1)
        ):
            return k


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


# ---------------------------------------------------------------------------
# (a) Minute counts: many independent scopes, fast.


@dataclass
class CountWorld:
    """Per-minute counts of one campaign's scopes, with what was injected."""

    start_ms: int
    minutes: int
    counts: dict[int, dict[ScopeKey, int]]
    base_per_minute: dict[ScopeKey, float]
    truth: list[Injection]
    last_year: dict[tuple[str, str, int], int] = field(default_factory=dict)


# Quiet traffic per scope kind, events a minute (log-uniform): brands and rooms
# from a handful (below the volume floor) to thousands, flash-sale orders from a
# handful to hundreds, the seven channels in the thousands.
QUIET_LEVELS = {
    BRAND: (3.0, 3000.0),
    ROOM: (3.0, 1000.0),
    FLASH_SALE_ORDERS: (3.0, 300.0),
    CHANNEL: (300.0, 20000.0),
}
CHANNEL_NAMES = ("search", "recommend", "livestream", "flash_sale", "store",
                 "detail", "other")  # fmt: skip

# Injected surges are big enough to matter to ops: steps to 2-3x from at least
# 50 events a minute, ramps of +40% a minute from at least 100 (docs/alerts.md
# gives the detector's recall on smaller ones).
SURGE_LEVELS = {STEP: 50.0, RAMP: 100.0, SPIKE: 20.0, SLOW_GROWTH: 20.0,
                SCHEDULED: 50.0}  # fmt: skip


def _shape(kind: str, rng: random.Random) -> tuple[float, int, Callable[[int], float]]:
    """(peak ratio, duration in minutes, multiplier at minute t after onset)."""
    if kind in (STEP, SCHEDULED):
        peak = rng.uniform(2.0, 3.0)
        duration = rng.randint(8, 30)
        return peak, duration, lambda t: peak
    if kind == RAMP:
        peak = rng.uniform(2.5, 3.5)
        duration = rng.randint(12, 30)
        return peak, duration, lambda t: min(peak, 1.0 + 0.4 * (t + 1))
    if kind == SPIKE:
        peak = rng.uniform(3.0, 6.0)
        return peak, 1, lambda t: peak
    if kind == SLOW_GROWTH:
        # +2% a minute, compounding, up to 3x (reached after 56 minutes): a
        # scope that triples over an hour is news, but not a surge.
        growth = rng.uniform(0.01, 0.02)
        return 3.0, 10**6, lambda t: min(3.0, (1.0 + growth) ** (t + 1))
    raise ValueError(f"unknown surge kind {kind!r}")


def count_world(
    seed: int,
    *,
    minutes: int = 240,
    scopes_per_kind: int = 26,
    surges_per_kind: int = 4,
    start_ms: int = T0_MS,
) -> CountWorld:
    """One campaign of `minutes` minutes: 7 channels and `scopes_per_kind` brands,
    rooms and flash-sale order scopes, `surges_per_kind` of each surge kind among
    them (on brands, rooms and flash-sale orders, and channels for steps and
    ramps), the rest quiet.

    Every scope's traffic is Poisson around a rate that drifts slowly (a sine of
    period 1.5-6 hours, amplitude up to 25%) with lognormal minute-to-minute
    noise of 2-8% (real traffic is burstier than Poisson); a surge multiplies it.
    """
    rng = random.Random(seed)
    scopes: list[ScopeKey] = [(CHANNEL, name) for name in CHANNEL_NAMES]
    for scope, prefix in ((BRAND, "b"), (ROOM, "r"), (FLASH_SALE_ORDERS, "b")):
        scopes += [(scope, f"{prefix}{seed}-{i:03d}") for i in range(scopes_per_kind)]
    base = {s: _log_uniform(rng, *QUIET_LEVELS[s[0]]) for s in scopes}

    first_onset, last_onset = 20, minutes - 20
    candidates = [s for s in scopes if s[0] != CHANNEL]
    rng.shuffle(candidates)
    channels = [s for s in scopes if s[0] == CHANNEL]
    rng.shuffle(channels)
    truth: list[Injection] = []
    shapes: dict[ScopeKey, tuple[int, int, Callable[[int], float]]] = {}
    for kind in KINDS:
        for n in range(surges_per_kind):
            # One step and one ramp in every other campaign go to a channel.
            if kind in (STEP, RAMP) and n == 0 and channels and seed % 2 == 0:
                target = channels.pop()
            else:
                target = candidates.pop()
            base[target] = max(
                base[target], _log_uniform(rng, SURGE_LEVELS[kind], 3000.0)
            )
            if target[0] == FLASH_SALE_ORDERS:
                base[target] = min(base[target], 300.0)
                base[target] = max(base[target], SURGE_LEVELS[kind])
            peak, duration, multiplier = _shape(kind, rng)
            onset = rng.randint(first_onset, last_onset)
            end = min(minutes, onset + duration)
            shapes[target] = (onset, end, multiplier)
            truth.append(
                Injection(
                    scope=target[0],
                    key=target[1],
                    onset_ms=start_ms + onset * MINUTE_MS,
                    kind=kind,
                    should_fire=SHOULD_FIRE[kind],
                    base_per_minute=round(base[target], 3),
                    peak_ratio=round(peak, 3),
                    end_ms=start_ms + end * MINUTE_MS,
                )
            )

    counts: dict[int, dict[ScopeKey, int]] = {
        start_ms + t * MINUTE_MS: {} for t in range(minutes)
    }
    last_year: dict[tuple[str, str, int], int] = {}
    for scope_key in scopes:
        amplitude = rng.uniform(0.0, 0.25)
        period = rng.uniform(90.0, 360.0)
        phase = rng.uniform(0.0, 2 * math.pi)
        sigma = rng.uniform(0.02, 0.08)
        shape = shapes.get(scope_key)
        kind = next((i.kind for i in truth if (i.scope, i.key) == scope_key), None)
        for t in range(minutes):
            rate = base[scope_key] * (
                1.0 + amplitude * math.sin(2 * math.pi * t / period + phase)
            )
            expected = rate
            if shape is not None and shape[0] <= t < shape[1]:
                expected = rate * shape[2](t - shape[0])
            noisy = expected * math.exp(rng.gauss(-sigma * sigma / 2, sigma))
            n = poisson(rng, noisy)
            if n:
                counts[start_ms + t * MINUTE_MS][scope_key] = n
            if kind == SCHEDULED:
                # Last year had the same event at the same minute, at 80-100%
                # of this year's traffic (its own Poisson noise included).
                last_year[(scope_key[0], scope_key[1], t)] = poisson(
                    rng, expected * rng.uniform(0.8, 1.0)
                )
    return CountWorld(start_ms, minutes, counts, base, truth, last_year)


def step_world(
    seed: int,
    *,
    base_per_minute: float,
    ratio: float,
    scopes: int,
    minutes: int = 40,
    onset: int = 25,
    start_ms: int = T0_MS,
) -> CountWorld:
    """`scopes` independent scopes of one volume, each with a step to `ratio`
    times its traffic at minute `onset`: the sensitivity grid of docs/alerts.md.
    Same noise model as `count_world` (noise 5%, no drift)."""
    rng = random.Random(seed)
    counts: dict[int, dict[ScopeKey, int]] = {
        start_ms + t * MINUTE_MS: {} for t in range(minutes)
    }
    truth = []
    base = {}
    for i in range(scopes):
        scope_key = (BRAND, f"g{i:04d}")
        base[scope_key] = base_per_minute
        truth.append(
            Injection(BRAND, scope_key[1], start_ms + onset * MINUTE_MS, STEP, True,
                      base_per_minute, ratio, start_ms + minutes * MINUTE_MS)
        )  # fmt: skip
        for t in range(minutes):
            expected = base_per_minute * (ratio if t >= onset else 1.0)
            noisy = expected * math.exp(rng.gauss(-0.00125, 0.05))
            n = poisson(rng, noisy)
            if n:
                counts[start_ms + t * MINUTE_MS][scope_key] = n
    return CountWorld(start_ms, minutes, counts, base, truth)


# ---------------------------------------------------------------------------
# (b) An event stream for the real worker.

STREAM_MINUTES = 30
STREAM_CAMPAIGN_ID = "d11-2025-surge"
# Share of each brand's traffic per channel, and per channel the share of
# clicks, carts and orders (flash sales convert far more).
CHANNEL_SHARE = {"search": 0.13, "recommend": 0.13, "livestream": 0.25,
                 "flash_sale": 0.25, "store": 0.10, "detail": 0.08,
                 "other": 0.06}  # fmt: skip
TYPE_MIX = {"flash_sale": (0.50, 0.15, 0.35)}
DEFAULT_TYPE_MIX = (0.78, 0.14, 0.08)
# Events a minute per brand; each brand has two rooms sharing its livestream
# traffic 60/40.
STREAM_BRANDS = {"sb1": 300.0, "sb2": 300.0, "sb3": 100.0, "sb4": 100.0,
                 "sb5": 100.0, "sb6": 100.0, "sb7": 100.0, "sb8": 100.0}  # fmt: skip
ROOM_SPLIT = (0.6, 0.4)
REGIONS = ("CN-GD", "CN-ZJ", "CN-JS", "CN-SH", "CN-BJ", "CN-SC", "CN-HB")
# A quiet scope's expected traffic may rise by at most this factor through a
# surge elsewhere (the injections are placed so none comes near 1.4x).
MAX_SIDE_EFFECT = 1.2

# (scope, key, kind, onset minute, minutes, peak): placed so that what one
# injection adds to the brands and channels it shares stays below 1.2x.
STREAM_PLAN: tuple[tuple[str, str, str, int, int, float], ...] = (
    (CHANNEL, "detail", STEP, 11, 5, 2.5),
    (ROOM, "sb1-live1", SLOW_GROWTH, 11, 19, 1.015),
    (FLASH_SALE_ORDERS, "sb2", STEP, 16, 8, 3.0),
    (ROOM, "sb1-live2", STEP, 17, 7, 2.5),
    (BRAND, "sb5", SPIKE, 19, 1, 5.0),
    (BRAND, "sb3", RAMP, 24, 6, 2.8),
)


@dataclass(frozen=True)
class Cell:
    """The finest unit of the stream's traffic: brand x channel (x room) x type."""

    brand_id: str
    channel: str
    room_id: str | None
    type: str
    rate: float  # events a minute without injections

    def scope_keys(self) -> list[ScopeKey]:
        keys = [(BRAND, self.brand_id), (CHANNEL, self.channel)]
        if self.room_id is not None:
            keys.append((ROOM, self.room_id))
        if self.type == "order" and self.channel == "flash_sale":
            keys.append((FLASH_SALE_ORDERS, self.brand_id))
        return keys


def _cells() -> list[Cell]:
    cells = []
    for brand_id, rate in STREAM_BRANDS.items():
        for channel, share in CHANNEL_SHARE.items():
            mix = TYPE_MIX.get(channel, DEFAULT_TYPE_MIX)
            rooms: list[tuple[str | None, float]] = [(None, 1.0)]
            if channel == "livestream":
                rooms = [
                    (f"{brand_id}-live{k + 1}", s) for k, s in enumerate(ROOM_SPLIT)
                ]
            for room_id, room_share in rooms:
                kinds = ("click", "cart", "order")
                for kind, type_share in zip(kinds, mix, strict=True):
                    cell_rate = rate * share * room_share * type_share
                    cells.append(Cell(brand_id, channel, room_id, kind, cell_rate))
    return cells


def _multiplier(kind: str, t: int, onset: int, minutes: int, peak: float) -> float:
    if not onset <= t < onset + minutes:
        return 1.0
    k = t - onset
    if kind in (STEP, SPIKE):
        return peak
    if kind == RAMP:
        return min(peak, 1.0 + 0.4 * (k + 1))
    if kind == SLOW_GROWTH:
        return float(peak ** (k + 1))
    raise ValueError(kind)


def _stream_plan() -> tuple[list[Cell], list[Injection], list[list[float]]]:
    """The cells, the ground truth and each cell's multiplier per minute."""
    cells = _cells()
    multipliers = [[1.0] * STREAM_MINUTES for _ in cells]
    truth = []
    for scope, key, kind, onset, minutes, peak in STREAM_PLAN:
        inside = [i for i, c in enumerate(cells) if (scope, key) in c.scope_keys()]
        for i in inside:
            for t in range(STREAM_MINUTES):
                multipliers[i][t] *= _multiplier(kind, t, onset, minutes, peak)
        # Scopes made only of the target's cells change by the same factor.
        inside_set = set(inside)
        affected = sorted(
            {
                sk
                for i in inside
                for sk in cells[i].scope_keys()
                if sk != (scope, key)
                and all(
                    j in inside_set for j, c in enumerate(cells) if sk in c.scope_keys()
                )
            }
        )
        base = sum(cells[i].rate for i in inside)
        top = max(_multiplier(kind, t, onset, minutes, peak) for t in range(60))
        truth.append(
            Injection(
                scope=scope,
                key=key,
                onset_ms=T0_MS + onset * MINUTE_MS,
                kind=kind,
                should_fire=SHOULD_FIRE[kind],
                base_per_minute=round(base, 3),
                peak_ratio=round(top if kind != SLOW_GROWTH else peak**minutes, 3),
                end_ms=T0_MS + min(STREAM_MINUTES, onset + minutes) * MINUTE_MS,
                affected=tuple(affected),
            )
        )
    return cells, truth, multipliers


def expected_scope_rates(
    cells: list[Cell], multipliers: list[list[float]] | None
) -> dict[ScopeKey, list[float]]:
    """Each scope's expected events per minute, with or without the injections."""
    rates: dict[ScopeKey, list[float]] = {}
    for i, cell in enumerate(cells):
        for sk in cell.scope_keys():
            row = rates.setdefault(sk, [0.0] * STREAM_MINUTES)
            for t in range(STREAM_MINUTES):
                row[t] += cell.rate * (multipliers[i][t] if multipliers else 1.0)
    return rates


def check_side_effects(
    cells: list[Cell], truth: list[Injection], multipliers: list[list[float]]
) -> None:
    """Fail unless every scope that is neither injected nor affected stays within
    MAX_SIDE_EFFECT of its quiet traffic (a spike's single minute excepted)."""
    plain = expected_scope_rates(cells, None)
    spiked = expected_scope_rates(cells, multipliers)
    exempt = {(i.scope, i.key) for i in truth}
    exempt |= {sk for i in truth for sk in i.affected}
    spike_minutes = {
        (i.onset_ms - T0_MS) // MINUTE_MS for i in truth if i.kind == SPIKE
    }
    for sk, row in spiked.items():
        if sk in exempt:
            continue
        for t, rate in enumerate(row):
            if t not in spike_minutes and rate > MAX_SIDE_EFFECT * plain[sk][t]:
                msg = f"{sk} reaches {rate / plain[sk][t]:.2f}x at minute {t}"
                raise ValueError(msg)


def stream_world(seed: int = 6) -> tuple[list[bytes], list[Injection], dict[str, str]]:
    """The event stream's JSON lines (arrival order), ground truth, settings."""
    rng = random.Random(seed)
    cells, truth, multipliers = _stream_plan()
    check_side_effects(cells, truth, multipliers)
    end_ms = T0_MS + STREAM_MINUTES * MINUTE_MS
    events: list[tuple[int, dict[str, Any]]] = []
    serial = 0
    for t in range(STREAM_MINUTES):
        for i, cell in enumerate(cells):
            n = poisson(rng, cell.rate * multipliers[i][t])
            for _ in range(n):
                serial += 1
                ts_ms = T0_MS + t * MINUTE_MS + rng.randrange(MINUTE_MS)
                event: dict[str, Any] = {
                    "event_id": f"s{seed}-{serial:07d}",
                    "type": cell.type,
                    "ts": ts_ms,
                    "user_id": f"u{rng.randrange(20_000):06d}",
                    "brand_id": cell.brand_id,
                    "sku_id": f"{cell.brand_id}-s{rng.randrange(4) + 1}",
                    "channel": cell.channel,
                }
                if cell.room_id is not None:
                    event["room_id"] = cell.room_id
                event["region"] = rng.choice(REGIONS)
                if cell.type != "click":
                    event["qty"] = 1 + (rng.random() < 0.1)
                if cell.type == "order":
                    event["order_id"] = f"o{seed}-{serial:07d}"
                    event["amount_fen"] = rng.randrange(2_900, 299_900)
                    event["vip"] = rng.random() < 0.22
                events.append((ts_ms + rng.randrange(1500), event))
                if cell.type == "order" and rng.random() < 0.03:
                    # A cancel: not traffic, it must not count toward any scope.
                    serial += 1
                    cancel_ts = ts_ms + rng.randrange(30_000, 600_000)
                    if cancel_ts < end_ms:
                        cancel = dict(event, event_id=f"s{seed}-{serial:07d}",
                                      type="cancel", ts=cancel_ts)  # fmt: skip
                        events.append((cancel_ts + rng.randrange(1500), cancel))
                if rng.random() < 0.01:
                    # A producer duplicate, byte-identical, seconds later.
                    events.append((ts_ms + rng.randrange(1500, 20_000), event))
    events.sort(key=lambda pair: (pair[0], pair[1]["event_id"]))
    lines = [
        json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        for _, e in events
    ]
    settings = {
        "PRESALE_CAMPAIGN_ID": STREAM_CAMPAIGN_ID,
        "PRESALE_CAMPAIGN_START_MS": str(T0_MS),
        "PRESALE_CAMPAIGN_END_MS": str(end_ms),
    }
    return lines, truth, settings


def truth_json(truth: list[Injection], settings: dict[str, str]) -> dict[str, Any]:
    """The ground truth file: the injections, and how to read them."""
    return {
        "about": (
            "Injected traffic changes. should_fire: an alert for (scope, key) "
            "must come within 2 event-minutes of onset_ms (true) or never "
            "(false). affected: scopes that are a part of the target and change "
            "with it. Every other scope is quiet and should raise no alert."
        ),
        "start_ms": int(settings["PRESALE_CAMPAIGN_START_MS"]),
        "end_ms": int(settings["PRESALE_CAMPAIGN_END_MS"]),
        "injections": [
            {**asdict(i), "affected": [list(sk) for sk in i.affected]} for i in truth
        ],
    }


def write_stream(out: Path, seed: int = 6) -> tuple[Path, Path, Path]:
    """Write `<name>.jsonl.gz`, `<name>.truth.json` and `<name>.settings.json`;
    the same seed writes the same bytes."""
    name = out.name.removesuffix(".gz").removesuffix(".jsonl")
    lines, truth, settings = stream_world(seed)
    data = b"".join(line + b"\n" for line in lines)
    if out.name.endswith(".gz"):
        raw = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as stream:
            stream.write(data)
        data = raw.getvalue()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    truth_path = out.parent / f"{name}.truth.json"
    settings_path = out.parent / f"{name}.settings.json"
    truth_path.write_text(json.dumps(truth_json(truth, settings), indent=1) + "\n")
    settings_path.write_text(json.dumps(settings, indent=2) + "\n")
    return out, truth_path, settings_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seeds.surges",
        description="Write the surge test stream, its ground truth and settings.",
    )
    default_out = Path("seeds/streams/surge/surge.jsonl.gz")
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args(argv)
    if not args.out.name.endswith((".jsonl", ".jsonl.gz")):
        print("error: --out must name a .jsonl or .jsonl.gz file", file=sys.stderr)
        return 2
    try:
        paths = write_stream(args.out, args.seed)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
