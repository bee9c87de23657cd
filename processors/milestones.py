"""First-hour milestones: GMV thresholds and year-over-year doubling (CONTRACT s4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

GMV_THRESHOLD: Final = "gmv_threshold"
YOY_DOUBLE: Final = "yoy_double"
MILESTONE_KINDS: Final = (GMV_THRESHOLD, YOY_DOUBLE)


@dataclass(frozen=True, slots=True)
class Target:
    """A first-hour gross GMV a brand may reach, once."""

    kind: str
    threshold_fen: int


@dataclass(frozen=True, slots=True)
class Milestone:
    """A target reached: emitted once, never retracted."""

    kind: str
    brand_id: str
    threshold_fen: int
    crossed_at_ms: int
    detected_at_ms: int

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.brand_id}:{self.threshold_fen}"


def brand_targets(
    thresholds_fen: tuple[int, ...], baseline_fen: int | None, min_baseline_fen: int
) -> tuple[Target, ...]:
    """All targets of a brand: the GMV thresholds, and twice a big-enough baseline."""
    targets = [Target(GMV_THRESHOLD, t) for t in thresholds_fen]
    if (
        baseline_fen is not None
        and baseline_fen > 0
        and baseline_fen >= min_baseline_fen
    ):
        targets.append(Target(YOY_DOUBLE, 2 * baseline_fen))
    return tuple(targets)


def crossings(
    total_before_fen: int,
    increments: list[tuple[int, int]],
    targets: tuple[Target, ...],
) -> list[tuple[Target, int]]:
    """Targets reached by adding `increments` ((amount_fen, ts_ms), in arrival order).

    Returns each reached target with the event time of the increment that made the
    running total reach it. A target already reached before the batch is returned
    with the first increment's time; the store drops it because it already holds it.
    """
    reached: list[tuple[Target, int]] = []
    pending = sorted(targets, key=lambda t: t.threshold_fen)
    running = total_before_fen
    for amount_fen, ts_ms in increments:
        running += amount_fen
        while pending and running >= pending[0].threshold_fen:
            reached.append((pending.pop(0), ts_ms))
    return reached
