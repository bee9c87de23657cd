"""The campaign state in memory and the one step that applies a plan to it.

This is the reference semantics of the store: `streams/lua/apply.lua` does the same
inside Redis, and tests hold the two to the same results.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final

from processors.counting import (
    OTHER_REGION,
    WATERMARK_RING,
    CampaignRules,
    DedupeId,
    Facet,
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
    # The facets' hashes (key -> field -> value), the capped labels admitted,
    # and the facets' buyers (key -> user ids), as lua/apply.lua keeps them.
    hashes: dict[str, dict[str, int]] = field(default_factory=dict)
    labels: set[str] = field(default_factory=set)
    facet_buyers: dict[str, set[str]] = field(default_factory=dict)


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


def _add(counts: dict[str, int], name: str, n: int) -> None:
    counts[name] = counts.get(name, 0) + n


def _admit(state: CampaignState, plan: Plan, used: set[int]) -> dict[int, str]:
    """The capped labels the fresh events name, as the campaign counts them:
    in the plan's order, one the campaign holds already or a new one while it
    holds fewer than the cap; past it, `other`."""
    resolved: dict[int, str] = {}
    for i, label in enumerate(plan.labels):
        if i not in used:
            continue
        if label not in state.labels and len(state.labels) < plan.label_cap:
            state.labels.add(label)
        resolved[i] = label if label in state.labels else OTHER_REGION
    return resolved


def _facet_field(facet: Facet, resolved: dict[int, str]) -> str:
    if facet.label < 0:
        return facet.prefix
    return facet.prefix + resolved[facet.label] + ":"


def _apply_facets(
    state: CampaignState,
    plan: Plan,
    by_profile: dict[int, dict[str, int]],
    profile_buyers: dict[int, list[str]],
) -> None:
    """Add each profile's counters to its facets' hashes (lua/apply.lua 6b)."""
    used = {
        plan.facets[f].label
        for p in by_profile
        for f in plan.profiles[p]
        if plan.facets[f].label >= 0
    }
    resolved = _admit(state, plan, used)
    for p, counts in by_profile.items():
        for facet in (plan.facets[f] for f in plan.profiles[p]):
            target = state.hashes.setdefault(facet.key, {})
            head = _facet_field(facet, resolved)
            for name, n in counts.items():
                if not facet.names or name in facet.names:
                    target[head + name] = target.get(head + name, 0) + n
            users = profile_buyers.get(p)
            if facet.buyers and users:
                label = resolved[facet.label] if facet.label >= 0 else ""
                state.facet_buyers.setdefault(facet.buyers + label, set()).update(users)


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
    # profile -> its fresh events' counters (only those they add), and buyers
    by_profile: dict[int, dict[str, int]] = defaultdict(dict)
    profile_buyers: dict[int, list[str]] = defaultdict(list)
    increments: dict[int, list[tuple[int, int]]] = defaultdict(list)
    new_events = duplicates = late = 0
    for field_name, tallies in (("clicks", plan.clicks), ("carts", plan.carts)):
        for tally in tallies:
            fresh = 0
            for ident, ts_ms, profile in zip(
                tally.ids, tally.ts_ms, tally.profiles, strict=True
            ):
                if is_late(ts_ms, state.watermark_ms, horizon):
                    late += 1
                    continue
                gen = dedupe_generation(ts_ms, horizon)
                if _first_seen(state.seen.setdefault(gen, set()), ident):
                    fresh += 1
                    _add(by_profile[profile], field_name, 1)
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
        p = by_profile[order.profile]
        for name, n in (
            ("orders", 1),
            ("units", order.qty),
            ("gross_gmv_fen", order.amount_fen),
            ("net_gmv_fen", order.amount_fen),
            ("vip_orders", int(order.vip)),
        ):
            _add(p, name, n)
        profile_buyers[order.profile].append(order.user_id)
        if order.first_hour:
            d["first_hour_gross_gmv_fen"] += order.amount_fen
            _add(p, "first_hour_gross_gmv_fen", order.amount_fen)
            increments[order.brand].append((order.amount_fen, order.ts_ms))
    for cancel in plan.cancels:
        if not _first_seen(state.seen_orders, cancel.id):
            duplicates += 1
            continue
        new_events += 1
        d = delta[cancel.brand, cancel.channel]
        d["cancels"] += 1
        d["net_gmv_fen"] -= cancel.amount_fen
        _add(by_profile[cancel.profile], "cancels", 1)
        _add(by_profile[cancel.profile], "net_gmv_fen", -cancel.amount_fen)
    _apply_facets(state, plan, by_profile, profile_buyers)

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
