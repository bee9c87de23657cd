"""Where presale's worker spends its CPU: py-spy samples grouped by stage.

`py-spy record --format raw` writes one line per distinct stack: frames from
the root to the leaf separated by ';', then the sample count. Each stack is
given to the stage of its innermost frame that belongs to a known stage (so a
dataclass `__init__` called from the planner counts as planning). py-spy
samples only running threads: the time the worker waits for Redis's Lua step
or for a fetch is not here; it shows as idle time, and Redis's and Kafka's own
CPU is measured from /proc beside it.

Run on a file: `python -m bench.profile var/bench/profile-<stamp>.txt`.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

# (stage, path fragments of its frames), innermost-match wins, in this order.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("decode + validate", ("streams/codecs.py", "processors/events.py")),
    ("plan (processors/counting)", ("processors/",)),
    ("encode plan for Lua", ("streams/store.py",)),
    ("dead letters, metrics", ("streams/outbox.py", "prometheus_client/")),
    ("pipeline glue (streams/)", ("streams/",)),
    ("Redis client", ("redis/",)),
    ("aiokafka fetch + records", ("aiokafka/",)),
    ("Faust / mode", ("faust/", "mode/")),
    ("asyncio event loop", ("asyncio/", "selectors.py")),
)


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, fragments in STAGES:
            if any(f in frame for f in fragments):
                return stage
    return "other"


def categorize(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        counts[stage_of(stack.split(";"))] += int(n)
    return counts


def shares(counts: Counter[str]) -> list[tuple[str, float]]:
    total = sum(counts.values()) or 1
    return [(stage, n / total) for stage, n in counts.most_common()]


def top_functions(path: Path, limit: int = 12) -> list[tuple[str, float]]:
    """The leaf frames with the most samples (self time)."""
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[stack.split(";")[-1]] += int(n)
    total = sum(counts.values()) or 1
    return [(frame, n / total) for frame, n in counts.most_common(limit)]


if __name__ == "__main__":
    file = Path(sys.argv[1])
    for stage, share in shares(categorize(file)):
        print(f"{share:6.1%}  {stage}")
    print()
    for frame, share in top_functions(file):
        print(f"{share:6.1%}  {frame}")
