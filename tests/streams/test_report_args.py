"""`presale report --top N` takes a whole number of 1 or more (issue 16).

Before the fix `--top -1` and `--top 0` were accepted (argparse `type=int`) and
cut the brand list at -1 and 0: a negative count is a mistake, not a report.
"""

from __future__ import annotations

import pytest

from streams.cli import parser


@pytest.mark.parametrize("raw", ["-1", "0", "²", "1.5", "ten"])
def test_bad_top_is_a_usage_error(raw: str) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["report", "--json", "--top", raw])
    assert exc.value.code == 2


@pytest.mark.parametrize(("raw", "want"), [("1", 1), ("10", 10), ("1000000", 10**6)])
def test_good_top(raw: str, want: int) -> None:
    assert parser().parse_args(["report", "--top", raw]).top == want
