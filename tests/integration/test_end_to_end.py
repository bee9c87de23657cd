"""The `make demo` flow through the CLI against the real services: replay, report
(table and JSON), check, and reset."""

from __future__ import annotations

import json

import pytest

from streams.recordings import iter_records
from streams.report import yuan
from tests.integration.helpers import campaign_keys, redis_client, settled_report
from tests.support.services import STREAMS, Env, recording_env, workers

pytestmark = pytest.mark.integration

NAME = "small"
FILE = STREAMS / f"{NAME}.jsonl.gz"


def test_replay_report_check_and_reset_through_the_cli() -> None:
    """With a worker running, `presale replay` publishes all 18,794 records of
    `small`; `presale report` prints the table (title with the campaign, totals,
    a row for each of the 200 brands, highest gross first); `presale report
    --json --top 3` lists exactly the 3 biggest brands; `presale check` accepts
    the expected report. With the worker stopped, `presale reset` deletes every
    Redis key of the campaign (measured: 12,006 keys before, 0 after; the count
    it prints is the count that went) and nothing of another campaign whose id
    starts the same; the report afterwards is empty."""
    env = Env(recording_env(NAME))
    campaign = env.vars["PRESALE_CAMPAIGN_ID"]
    prefix = f"presale:{{{campaign}}}:"
    n_records = sum(1 for _ in iter_records(FILE))

    with workers(env, 1) as running:
        out = env.presale("replay", "--quiet", str(FILE))
        assert f"published {n_records:,} records" in out
        live = settled_report(env, n_records, running)

        table = env.presale("report")
        top3 = json.loads(env.presale("report", "--json", "--top", "3"))
        checked = env.presale("check", str(STREAMS / f"{NAME}.expected.json"))

    assert f"presale {campaign}" in table
    assert "brands by gross GMV" in table
    assert yuan(live["totals"]["gross_gmv_fen"]) in table
    assert len(live["brands"]) == 200
    positions = [table.find(f" {b['brand_id']} ") for b in live["brands"]]
    assert -1 not in positions  # every brand has a row ...
    assert positions[:3] == sorted(positions[:3])  # ... the biggest first
    assert yuan(live["brands"][0]["gross_gmv_fen"]) in table

    assert [b["brand_id"] for b in top3["brands"]] == [
        b["brand_id"] for b in live["brands"][:3]
    ]
    assert top3["brands"] == live["brands"][:3]
    assert top3["totals"] == live["totals"]
    assert "the report equals" in checked

    # Another campaign whose id starts with this one's must survive the reset.
    neighbour = f"presale:{{{campaign}x}}:sentinel"
    client = redis_client()
    try:
        client.set(neighbour, b"1")
        keys = campaign_keys(prefix)
        before = len(keys)
        assert before > 200  # per-brand hashes, HyperLogLogs, dedupe shards...
        # The stopped worker's outbox lease may expire on its own meanwhile.
        expiring = sum(1 for k in keys if client.pttl(k) > 0)
        out = env.presale("reset")
        words = out.split()
        assert words[:2] == ["campaign", f"{campaign}:"] and words[-2:] == [
            "Redis",
            "keys",
        ]
        deleted = int(words[-3].replace(",", ""))
        assert before - expiring <= deleted <= before
        assert campaign_keys(prefix) == []
        assert client.get(neighbour) == b"1"
    finally:
        client.delete(neighbour)
        client.close()
    print(f"reset deleted {before} keys")

    empty = env.report()
    assert empty["brands"] == [] and empty["milestones"] == []
    assert set(empty["totals"].values()) == {0}
    assert empty["dead_letters"] == 0
    assert empty["consumer_lag"] == n_records  # the offsets went with the state
