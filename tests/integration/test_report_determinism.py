"""Every report field is a function of the input, whatever the batching, or is
left out of exact comparisons with its reason (issue 13, section 4)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.helpers import report_diff, reset_after, settled_report
from tests.support.services import STREAMS, Env, Worker, recording_env

pytestmark = pytest.mark.integration

FILE = STREAMS / "small.jsonl.gz"
RECORDS = 18_794
# Fields that are not a function of the input alone, with the reason:
NOT_EXACT = {
    # when the report is read
    "consumer_lag",
    # the dedupe watermark, the highest batch median of event times: where
    # batches split decides it (measured: 41.8 s apart between the two runs)
    "watermark_ms",
    # the wall clock when the milestone was decided
    "detected_at_ms",
    # the event time of the order that reached the threshold, taken in the
    # order a brand's orders are applied: exact only where they arrive in
    # event-time order (CONTRACT 4); partitions interleave with the batching
    # (measured: 144 of the 253 milestones differ between the two runs)
    "crossed_at_ms",
    # the wall clock when the alert was raised
    "raised_at_ms",
}


def exact_part(value: Any) -> Any:
    """The report without the NOT_EXACT fields (and the campaign's id, which
    each run makes unique), milestones in a fixed order."""
    if isinstance(value, dict):
        out = {k: exact_part(v) for k, v in value.items() if k not in NOT_EXACT}
        if "milestones" in out:
            out["milestones"] = sorted(
                out["milestones"],
                key=lambda m: (m["kind"], m["brand_id"], m["threshold_fen"]),
            )
        if "campaign" in out:
            out["campaign"] = {**out["campaign"], "id": ""}
        return out
    if isinstance(value, list):
        return [exact_part(v) for v in value]
    return value


def report_with_batches(max_records: str) -> dict[str, Any]:
    env = Env({**recording_env("small"), "PRESALE_BATCH_MAX_RECORDS": max_records})
    with reset_after(env):
        worker = Worker(env, f"b{max_records}").start()
        try:
            env.replay(FILE)
            return settled_report(env, RECORDS, [worker])
        finally:
            worker.stop()


def test_the_same_report_whatever_the_batching() -> None:
    """`small` (18,794 records) applied in batches of at most 97 records and in
    batches of up to 40,000: the two reports are equal field by field but for
    the NOT_EXACT ones, each with its reason above."""
    small = report_with_batches("97")
    large = report_with_batches("40000")
    assert report_diff(exact_part(small), exact_part(large)) == []
    assert small["totals"]["orders"] > 0 and small["milestones"]
