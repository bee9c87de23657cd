"""Compare a live report with an expected one from the independent batch reference."""

from __future__ import annotations

from typing import Any

# The contract allows under 2% error on distinct buyers: the store counts them
# exactly up to 1,000 and with a HyperLogLog past that (docs/counting.md).
BUYERS_TOLERANCE = 0.02
_SKIP = {"consumer_lag", "alerts", "watermark_ms", "detected_at_ms", "crossed_at_ms"}


def _close(live: int, want: int) -> bool:
    return abs(live - want) <= max(1, BUYERS_TOLERANCE * want)


def differences(live: Any, want: Any, path: str = "") -> list[str]:
    """Every place where `live` differs from `want`; buyers within 2%."""
    out: list[str] = []
    if isinstance(want, dict) and isinstance(live, dict):
        for key in sorted(set(want) | set(live)):
            if key in _SKIP:
                continue
            if key not in live:
                out.append(f"{path}/{key}: missing (want {want[key]!r})"[:300])
            elif key not in want:
                continue  # live has more (e.g. wall-clock fields); fine
            elif key == "buyers":
                if not _close(live[key], want[key]):
                    out.append(f"{path}/buyers: {live[key]} vs {want[key]}")
            else:
                out.extend(differences(live[key], want[key], f"{path}/{key}"))
    elif isinstance(want, list) and isinstance(live, list):
        if len(live) != len(want):
            out.append(f"{path}: {len(live)} items vs {len(want)}")
        for i, (a, b) in enumerate(zip(live, want, strict=False)):
            out.extend(differences(a, b, f"{path}[{i}]"))
    elif live != want:
        out.append(f"{path}: {live!r} vs {want!r}"[:300])
    return out


def milestone_set(report: dict[str, Any]) -> set[tuple[str, str, int]]:
    return {
        (m["kind"], m["brand_id"], m["threshold_fen"]) for m in report["milestones"]
    }


def check(
    live: dict[str, Any], want: dict[str, Any], crossed: bool = False
) -> list[str]:
    """Differences between a live report and an expected one, milestones as a set.

    `crossed`: compare each milestone's crossed_at_ms too, where the live
    processor saw every brand's orders in the order the expected report took
    them (a stream applied in file order); a replay through partitions that
    interleave applies them in another order, and the contract makes
    crossed_at_ms exact only in event-time order."""
    live = dict(live)
    want = dict(want)
    problems = []
    if crossed:
        at = {
            (m["kind"], m["brand_id"], m["threshold_fen"]): m.get("crossed_at_ms")
            for m in live["milestones"]
        }
        for m in want["milestones"]:
            got = at.get((m["kind"], m["brand_id"], m["threshold_fen"]))
            if got is not None and got != m["crossed_at_ms"]:
                problems.append(
                    f"milestone {m['kind']} {m['brand_id']!r} {m['threshold_fen']}:"
                    f" crossed_at_ms {got} vs {m['crossed_at_ms']}"
                )
    if milestone_set(live) != milestone_set(want):
        extra = milestone_set(live) - milestone_set(want)
        missing = milestone_set(want) - milestone_set(live)
        problems.append(f"milestones: {len(extra)} unexpected, {len(missing)} missing")
    key = "kind", "brand_id", "threshold_fen"
    for r in (live, want):
        r["milestones"] = sorted(
            r["milestones"], key=lambda m: tuple(m[k] for k in key)
        )
    want["campaign"] = {**want["campaign"], "id": live["campaign"]["id"]}
    return problems + differences(live, want)
