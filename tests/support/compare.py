"""Report comparison for tests: the same code `presale check` runs."""

from streams.check import differences, milestone_set

__all__ = ["differences", "milestone_set"]
