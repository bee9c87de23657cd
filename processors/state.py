"""The campaign state in memory and the one step that applies a plan to it.

This is the reference semantics of the store: `streams/lua/apply.lua` does the same
inside Redis, and tests hold the two to the same results.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final

from processors.counting import (
    WATERMARK_RING,
    CampaignRules,
    DedupeId,
    Plan,
    dedupe_generation,
    is_late,
    oldest_generation,
    watermark_from,
)
from processors.events import CHANNELS
from processors.milestones import Milestone, crossings

COUNTERS: Final = (
    "clicks",
    "carts",
    "orders",
    "cancels",
    "units",
    "gross_gmv_fen",
    "net_gmv_fen",
    "vip_orders",
    "first_hour_gross_gmv_fen",
)


def _counters() -> dict[str, int]:
    return dict.fromkeys(COUNTERS, 0)


@dataclass
class CampaignState:
    """Everything the store keeps for one campaign."""

    offsets: dict[str, int] = field(default_factory=dict)
    watermark_ms: int = 0
    # The latest watermark samples of all batches, newest first.
    ring: list[int] = field(default_factory=list)
    # Click and cart ids by the generation of their event time; order and
    # cancel ids for the campaign's life.
    seen: dict[int, set[tuple[int, str]]] = field(default_factory=dict)
    seen_orders: set[tuple[int, str]] = field(default_factory=set)
    late: int = 0
    brands: dict[str, dict[str, int]] = field(default_factory=dict)
    brand_channels: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=_counters)
    channels: dict[str, dict[str, int]] = field(default_factory=dict)
    buyers: dict[tuple[str, ...], set[str]] = field(default_factory=dict)
    milestones: dict[str, Milestone] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    out_of_window: int = 0


@dataclass(frozen=True, slots=True)
class Stale:
    """The plan was built on offsets another worker has since moved past."""

    partition: str
    applied: int


@dataclass(frozen=True, slots=True)
class Applied:
    """What one plan changed that the outside world hears about."""

    milestones: list[Milestone]
    new_events: int
    duplicates: int
    late: int = 0


def _first_seen(bucket: set[tuple[int, str]], ident: DedupeId) -> bool:
    key = (ident.shard, ident.member)
    if key in bucket:
        return False
    bucket.add(key)
    return True


def apply_plan(
    state: CampaignState, plan: Plan, rules: CampaignRules, now_ms: int
) -> Applied | Stale:
    """Apply `plan` atomically, or change nothing and say which offset moved."""
    for tp, (before, _last) in plan.offsets.items():
        applied = state.offsets.get(tp, -1)
        if applied != before:
            return Stale(tp, applied)
    for tp, (_before, last) in plan.offsets.items():
        state.offsets[tp] = last
    for reason, n in plan.rejected.items():
        state.dead_letters[reason] = state.dead_letters.get(reason, 0) + n
    state.out_of_window += plan.out_of_window
    horizon = rules.dedupe_horizon_ms
    if plan.samples:
        state.ring = (list(reversed(plan.samples)) + state.ring)[:WATERMARK_RING]
        state.watermark_ms = watermark_from(state.ring, state.watermark_ms)
    oldest = oldest_generation(state.watermark_ms, horizon)
    for old in [g for g in state.seen if g < oldest]:
        del state.seen[old]

    delta: dict[tuple[int, int], dict[str, int]] = defaultdict(_counters)
    buyers: dict[tuple[int, int], set[str]] = defaultdict(set)
    increments: dict[int, list[tuple[int, int]]] = defaultdict(list)
    new_events = duplicates = late = 0
    for field_name, tallies in (("clicks", plan.clicks), ("carts", plan.carts)):
        for tally in tallies:
            fresh = 0
            for ident, ts_ms in zip(tally.ids, tally.ts_ms, strict=True):
                if is_late(ts_ms, state.watermark_ms, horizon):
                    late += 1
                    continue
                gen = dedupe_generation(ts_ms, horizon)
                if _first_seen(state.seen.setdefault(gen, set()), ident):
                    fresh += 1
                else:
                    duplicates += 1
            if fresh:  # an all-duplicate tally adds no channel entry
                delta[tally.brand, tally.channel][field_name] += fresh
            new_events += fresh
    state.late += late
    for order in plan.orders:
        if not _first_seen(state.seen_orders, order.id):
            duplicates += 1
            continue
        new_events += 1
        d = delta[order.brand, order.channel]
        d["orders"] += 1
        d["units"] += order.qty
        d["gross_gmv_fen"] += order.amount_fen
        d["net_gmv_fen"] += order.amount_fen
        d["vip_orders"] += order.vip
        buyers[order.brand, order.channel].add(order.user_id)
        if order.first_hour:
            d["first_hour_gross_gmv_fen"] += order.amount_fen
            increments[order.brand].append((order.amount_fen, order.ts_ms))
    for cancel in plan.cancels:
        if not _first_seen(state.seen_orders, cancel.id):
            duplicates += 1
            continue
        new_events += 1
        d = delta[cancel.brand, cancel.channel]
        d["cancels"] += 1
        d["net_gmv_fen"] -= cancel.amount_fen

    for brand_id in plan.brands:
        state.brands.setdefault(brand_id, _counters())
    for (brand, channel), counts in delta.items():
        brand_id, name = plan.brands[brand], CHANNELS[channel]
        for target in (
            state.brands[brand_id],
            state.brand_channels.setdefault((brand_id, name), _counters()),
            state.totals,
            state.channels.setdefault(name, _counters()),
        ):
            for counter, n in counts.items():
                target[counter] += n
        users = buyers.get((brand, channel))
        if users:
            for scope in ((brand_id,), (brand_id, name), (), ("", name)):
                state.buyers.setdefault(scope, set()).update(users)

    milestones: list[Milestone] = []
    for brand, steps in increments.items():
        brand_id = plan.brands[brand]
        total_after = state.brands[brand_id]["first_hour_gross_gmv_fen"]
        total_before = total_after - sum(amount for amount, _ts in steps)
        for goal, crossed_at_ms in crossings(total_before, steps, plan.targets[brand]):
            milestone = Milestone(
                goal.kind, brand_id, goal.threshold_fen, crossed_at_ms, now_ms
            )
            if milestone.key not in state.milestones:
                state.milestones[milestone.key] = milestone
                milestones.append(milestone)
    return Applied(milestones, new_events, duplicates, late)
