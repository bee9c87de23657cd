"""Measure the surge detector on generated traffic with injected surges.

`python -m seeds.surge_eval [--campaigns N] [--seed S]` prints, per surge kind,
the recall within 2 event-minutes and the detection delay, the false alerts per
100 quiet scope-hours, and a sensitivity grid (recall of steps by volume and
size). The truth is what `seeds.surges` injected; docs/alerts.md quotes a run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from processors.surge import MINUTE_MS, Candidate, SurgeRules, detect
from seeds.surges import KINDS, CountWorld, count_world, step_world

# The contract's target: found within 2 event-minutes of the onset.
MAX_DELAY_MINUTES = 2
SENSITIVITY_VOLUMES = (10, 20, 40, 80, 160, 320, 640, 1280)
SENSITIVITY_RATIOS = (1.4, 1.6, 2.0, 3.0)


@dataclass
class KindResult:
    """What the detector did with the injections of one kind."""

    injected: int = 0
    should_fire: bool = True
    found: int = 0  # should fire: alerted within MAX_DELAY_MINUTES of onset
    delays: list[int] = field(default_factory=list)  # of the first alert, minutes
    fired: int = 0  # injections with any alert at or after onset


@dataclass
class Evaluation:
    """The totals of an evaluation over several generated campaigns."""

    kinds: dict[str, KindResult]
    quiet_minutes: int = 0
    false_alerts: int = 0
    # The same, only for scopes whose quiet traffic is at least min_count a
    # minute (the ones that could fire at all).
    quiet_minutes_above_floor: int = 0
    false_alerts_above_floor: int = 0
    false_alert_list: list[Candidate] = field(default_factory=list)

    @property
    def quiet_hours(self) -> float:
        return self.quiet_minutes / 60

    @property
    def false_per_100h(self) -> float:
        return 100 * self.false_alerts / max(self.quiet_hours, 1e-9)

    @property
    def false_per_100h_above_floor(self) -> float:
        hours = self.quiet_minutes_above_floor / 60
        return 100 * self.false_alerts_above_floor / max(hours, 1e-9)


def score_world(
    world: CountWorld, alerts: Sequence[Candidate], rules: SurgeRules, into: Evaluation
) -> None:
    """Add one campaign's alerts, judged against its injections, to `into`."""
    injected = {(i.scope, i.key): i for i in world.truth}
    by_scope: dict[tuple[str, str], list[Candidate]] = {}
    for alert in alerts:
        by_scope.setdefault((alert.scope, alert.key), []).append(alert)
    # A minute can be judged once the history before its run is in the campaign.
    first_judged = rules.history_minutes + rules.persistence_minutes - 1
    for scope_key, base in world.base_per_minute.items():
        scope_alerts = by_scope.get(scope_key, [])
        injection = injected.get(scope_key)
        quiet_until = world.minutes
        if injection is not None and injection.should_fire:
            quiet_until = (injection.onset_ms - world.start_ms) // MINUTE_MS
        quiet = max(0, quiet_until - first_judged)
        quiet_end_ms = world.start_ms + quiet_until * MINUTE_MS
        false = [a for a in scope_alerts if a.minute_ms < quiet_end_ms]
        into.quiet_minutes += quiet
        into.false_alerts += len(false)
        into.false_alert_list.extend(false)
        if base >= rules.min_count:
            into.quiet_minutes_above_floor += quiet
            into.false_alerts_above_floor += len(false)
        if injection is None:
            continue
        result = into.kinds[injection.kind]
        result.injected += 1
        result.should_fire = injection.should_fire
        after = [a for a in scope_alerts if a.minute_ms >= injection.onset_ms]
        if after:
            result.fired += 1
            delay = (after[0].minute_ms - injection.onset_ms) // MINUTE_MS
            result.delays.append(delay)
            if injection.should_fire and delay <= MAX_DELAY_MINUTES:
                result.found += 1


def evaluate(
    rules: SurgeRules, campaigns: int = 20, seed: int = 1, last_year: bool = True
) -> Evaluation:
    """Generate `campaigns` four-hour campaigns (seeds seed, seed+1, ...), run the
    detector on each and score it."""
    evaluation = Evaluation(kinds={kind: KindResult() for kind in KINDS})
    for n in range(campaigns):
        world = count_world(seed + n)
        alerts = detect(
            world.counts,
            rules,
            world.start_ms,
            world.last_year if last_year else None,
        )
        score_world(world, alerts, rules, evaluation)
    return evaluation


def sensitivity(
    rules: SurgeRules, scopes: int = 100, seed: int = 1
) -> dict[tuple[int, float], float]:
    """Recall within 2 minutes of steps, per (events a minute, step ratio)."""
    grid: dict[tuple[int, float], float] = {}
    for v, volume in enumerate(SENSITIVITY_VOLUMES):
        for r, ratio in enumerate(SENSITIVITY_RATIOS):
            world = step_world(
                seed * 1000 + v * 10 + r,
                base_per_minute=volume,
                ratio=ratio,
                scopes=scopes,
            )
            evaluation = Evaluation(kinds={kind: KindResult() for kind in KINDS})
            alerts = detect(world.counts, rules, world.start_ms)
            score_world(world, alerts, rules, evaluation)
            grid[(volume, ratio)] = evaluation.kinds["step"].found / scopes
    return grid


def _delays(result: KindResult) -> tuple[str, str]:
    if not result.delays:
        return "-", "-"
    return f"{statistics.median(result.delays):g}", str(max(result.delays))


def format_report(
    rules: SurgeRules,
    evaluation: Evaluation,
    without_last_year: Evaluation | None,
    grid: dict[tuple[int, float], float] | None,
    campaigns: int,
) -> str:
    lines = [
        f"surge detector on {campaigns} generated campaigns of 4 h "
        f"({evaluation.quiet_hours:,.0f} quiet scope-hours)",
        f"rules: {rules}",
        "",
        f"{'kind':<12} {'injected':>8} {'must fire':>9} {'found<=2m':>9} "
        f"{'recall':>7} {'delay med':>9} {'delay max':>9} {'fired':>6}",
    ]
    for kind, r in evaluation.kinds.items():
        recall = f"{r.found / r.injected:.3f}" if r.should_fire and r.injected else "-"
        found = str(r.found) if r.should_fire else "-"
        med, top = _delays(r) if r.should_fire else ("-", "-")
        lines.append(
            f"{kind:<12} {r.injected:>8} {'yes' if r.should_fire else 'no':>9} "
            f"{found:>9} {recall:>7} {med:>9} {top:>9} {r.fired:>6}"
        )
    lines += [
        "",
        f"false alerts: {evaluation.false_alerts} in "
        f"{evaluation.quiet_hours:,.1f} quiet scope-hours = "
        f"{evaluation.false_per_100h:.3f} per 100 quiet scope-hours",
        f"  scopes of at least {rules.min_count} events a minute: "
        f"{evaluation.false_alerts_above_floor} in "
        f"{evaluation.quiet_minutes_above_floor / 60:,.1f} scope-hours = "
        f"{evaluation.false_per_100h_above_floor:.3f} per 100",
        "  (quiet: scopes without a should-fire injection, and those before "
        "its onset; alerts on spikes, slow growth and scheduled steps count as "
        "false)",
    ]
    if without_last_year is not None:
        r = without_last_year.kinds["scheduled"]
        lines.append(
            f"without last year's baseline, {r.fired} of {r.injected} scheduled "
            f"steps fire ({without_last_year.false_per_100h:.3f} false alerts "
            "per 100 quiet scope-hours)"
        )
    if grid is not None:
        lines += [
            "",
            "recall within 2 minutes of a step, by quiet events a minute "
            "(rows) and step size (columns), 100 scopes each:",
            f"{'events/min':>10} "
            + " ".join(f"{f'x{ratio:g}':>6}" for ratio in SENSITIVITY_RATIOS),
        ]
        for volume in SENSITIVITY_VOLUMES:
            cells = " ".join(
                f"{grid[(volume, ratio)]:>6.2f}" for ratio in SENSITIVITY_RATIOS
            )
            lines.append(f"{volume:>10} {cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seeds.surge_eval",
        description="Recall, delay and false alerts of the surge detector.",
    )
    parser.add_argument("--campaigns", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-grid", action="store_true", help="skip the grid")
    args = parser.parse_args(argv)
    if args.campaigns < 1:
        print("error: --campaigns must be at least 1", file=sys.stderr)
        return 2
    rules = SurgeRules()
    evaluation = evaluate(rules, args.campaigns, args.seed)
    without = evaluate(rules, args.campaigns, args.seed, last_year=False)
    grid = None if args.no_grid else sensitivity(rules, seed=args.seed)
    print(format_report(rules, evaluation, without, grid, args.campaigns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
