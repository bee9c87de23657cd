"""Each committed recording, replayed through real Kafka into real Redis, gives
exactly the report the independent batch reference expects."""

from __future__ import annotations

import json

import pytest

from tests.support.compare import differences, milestone_set
from tests.support.services import STREAMS, Env, recording_env, workers

pytestmark = pytest.mark.integration

RECORDINGS = sorted(
    p.name.removesuffix(".jsonl.gz") for p in STREAMS.glob("*.jsonl.gz")
)


@pytest.mark.parametrize("name", RECORDINGS)
def test_replay_matches_expected_report(name: str) -> None:
    """Every counter exact (buyers within HyperLogLog's 2%), the milestone set
    exact, dead_letters and out_of_window exact, consumer_lag 0."""
    want = json.loads((STREAMS / f"{name}.expected.json").read_text())
    env = Env(recording_env(name))
    with workers(env, 1) as running:
        env.replay(STREAMS / f"{name}.jsonl.gz")
        live = env.wait_applied(alive=running)
    assert live["consumer_lag"] == 0
    assert milestone_set(live) == milestone_set(want)
    live["milestones"] = sorted(
        live["milestones"], key=lambda m: (m["kind"], m["brand_id"], m["threshold_fen"])
    )
    want["campaign"]["id"] = live["campaign"]["id"]  # the test's own campaign id
    assert differences(live, want) == []
