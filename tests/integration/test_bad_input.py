"""Malformed records go to the dead-letter topic, once each, with their reason;
the valid events around them are all counted and the worker keeps running."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from seeds import reference
from tests.integration.helpers import (
    read_topic,
    report_diff,
    reset_after,
    settled_report,
)
from tests.support.services import KAFKA, Env, Worker, workers

pytestmark = pytest.mark.integration

T0_MS = 1_760_529_600_000
END_MS = T0_MS + 2 * 3_600_000
PARTITIONS = 6  # PRESALE_TOPIC_PARTITIONS: the worker creates the topics
MAX_RECORD_BYTES = 65_536
# A dead letter keeps the head of a too-large record (streams/codecs.py).
DEAD_LETTER_RAW_BYTES = 4096


def js(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def click(event_id: str, **fields: Any) -> dict[str, Any]:
    base = {
        "event_id": event_id,
        "type": "click",
        "ts": T0_MS + 60_000,
        "user_id": "u9",
        "brand_id": "alpha",
        "channel": "search",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def order(event_id: str, **fields: Any) -> dict[str, Any]:
    base = {
        "event_id": event_id,
        "type": "order",
        "ts": T0_MS + 120_000,
        "user_id": "u9",
        "brand_id": "alpha",
        "order_id": f"bad-{event_id}",
        "amount_fen": 100,
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


# (topic, value, reason): every malformed record, with the reason
# docs/validation.md gives it. `...` drops a field.
BAD: list[tuple[str, bytes | None, str]] = [
    # not JSON at all, or JSON this contract refuses
    ("clicks", b'{"event_id": "b1", "type": "click", ts: 1}', "invalid_json"),
    ("clicks", b'{"event_id":"b2","type":"click","ts":17605296', "invalid_json"),
    (
        "clicks",
        b'{"event_id":"b3","type":"click","ts":NaN,"user_id":"u9","brand_id":"a"}',
        "invalid_json",
    ),
    ("clicks", None, "invalid_json"),  # a tombstone: no value at all
    ("clicks", b"", "invalid_json"),
    ("carts", b'{"event_id":"b6","user_id":"\\ud83d"}', "invalid_json"),
    ("carts", b'{"event_id":"b7","ts":1e400}', "invalid_json"),
    ("orders", b'{"event_id":"b8"}{"event_id":"b8"}', "invalid_json"),
    # not UTF-8
    ("clicks", b'{"event_id":"b9","user_id":"\xff\xfe"}', "invalid_utf8"),
    ("orders", b'{"event_id":"b10","brand_id":"\xc0\xaf"}', "invalid_utf8"),
    # JSON, but not an object
    ("clicks", js([click("b11")]), "not_object"),
    ("carts", b'"cart"', "not_object"),
    ("orders", b"null", "not_object"),
    # fields: missing, wrong JSON type, out of range
    ("clicks", js(click(...)), "missing_field"),  # no event_id
    ("clicks", js(click("b15", channel="livestream")), "missing_field"),
    ("orders", js(order("b16", order_id=...)), "missing_field"),
    ("orders", js(order("b17", type="cancel", amount_fen=...)), "missing_field"),
    ("clicks", js(click("b18", ts=str(T0_MS))), "wrong_type"),
    ("clicks", js(click("b19", vip="true")), "wrong_type"),
    ("carts", js(click("b20", type="cart", ts=True)), "wrong_type"),
    (
        "carts",
        js(click("b21", type="cart"))[:-1] + b',"qty":18446744073709551616}',
        "wrong_type",
    ),
    ("orders", js(order("b22", amount_fen=99.5)), "wrong_type"),
    ("orders", js(order("b23", amount_fen=1.0)), "wrong_type"),
    ("orders", js(order("b24", amount_fen=-1)), "bad_value"),
    ("orders", js(order("b25", amount_fen=10**12 + 1)), "bad_value"),
    ("clicks", js(click("b26", channel="tv")), "bad_value"),
    ("clicks", js(click("b27", brand_id="x" * 65)), "bad_value"),
    ("orders", js(order("e" * 129)), "bad_value"),
    ("orders", js(order("b29", type="refund")), "bad_value"),
    ("orders", js(order("b30", ts=-1)), "bad_value"),
    ("carts", js(click("b31", type="cart", qty=0)), "bad_value"),
    # a type the topic does not carry
    ("clicks", js(order("b32")), "topic_mismatch"),
    ("carts", js(order("b33")), "topic_mismatch"),
    ("orders", js(click("b34")), "topic_mismatch"),
    # about 900 KB: under the broker's 1 MB, far over PRESALE_MAX_RECORD_BYTES
    ("clicks", js(click("b35", pad="p" * 900_000)), "too_large"),
]


def valid_events() -> list[tuple[str, dict[str, Any]]]:
    """Valid events; what they count is worked out by hand below (EXPECTED_*)."""
    t = T0_MS
    o1 = {
        "event_id": "o1",
        "type": "order",
        "ts": t + 1_000,
        "user_id": "u1",
        "brand_id": "alpha",
        "channel": "search",
        "order_id": "A1",
        "amount_fen": 10_000,
        "qty": 2,
        "vip": True,
    }
    x1 = {
        "event_id": "x1",
        "type": "cancel",
        "ts": t + 9_000,
        "user_id": "u2",
        "brand_id": "alpha",
        "channel": "livestream",
        "room_id": "r1",
        "order_id": "A2",
        "amount_fen": 25_000,
    }
    c1 = {
        "event_id": "c1",
        "type": "click",
        "ts": t + 10,
        "user_id": "u1",
        "brand_id": "alpha",
        "channel": "search",
    }
    k2 = {
        "event_id": "k2",
        "type": "cart",
        "ts": t + 30,
        "user_id": "u3",
        "brand_id": "beta",
        "channel": "store",
    }
    return [
        ("clicks", c1),
        ("clicks", {**c1, "event_id": "c2", "channel": "livestream", "room_id": "r1"}),
        (
            "clicks",
            {**c1, "event_id": "c3", "brand_id": "beta", "channel": "recommend"},
        ),
        (
            "clicks",
            {
                "event_id": "c4",
                "type": "click",
                "ts": t + 40,
                "user_id": "u3",
                "brand_id": "beta",
                "sku_id": None,
                "coupon": "x",  # unknown fields are ignored
            },
        ),
        ("clicks", {**c1, "event_id": "c5", "brand_id": "gamma", "channel": "detail"}),
        ("clicks", {**c1, "event_id": "c6", "channel": "flash_sale", "vip": True}),
        ("clicks", c1),  # a producer duplicate: not counted again
        ("clicks", {**c1, "event_id": "c8", "ts": t - 1_000}),  # before the start
        (
            "clicks",
            {
                **c1,
                "event_id": "c9",
                "brand_id": "gamma",
                "channel": "store",
                "region": "CN-GD",
            },
        ),
        ("carts", {**k2, "event_id": "k1", "brand_id": "alpha", "qty": 2}),
        ("carts", k2),
        (
            "carts",
            {
                **k2,
                "event_id": "k3",
                "brand_id": "gamma",
                "channel": "livestream",
                "room_id": "r2",
            },
        ),
        ("carts", k2),  # duplicate
        ("orders", o1),
        (
            "orders",
            {
                **o1,
                "event_id": "o2",
                "ts": t + 2_000,
                "user_id": "u2",
                "channel": "livestream",
                "room_id": "r1",
                "order_id": "A2",
                "amount_fen": 25_000,
                "qty": 1,
                "vip": False,
            },
        ),
        (
            "orders",
            {
                **o1,
                "event_id": "o3",
                "ts": t + 4_000_000,
                "user_id": "u3",
                "brand_id": "beta",
                "channel": "recommend",
                "order_id": "B1",
                "amount_fen": 5_550,
                "qty": 3,
                "vip": False,
            },
        ),
        (
            "orders",
            {
                # A free order, in the second hour: a first-hour one that leaves
                # a brand's first-hour GMV at 0 crashes the worker (apply.lua).
                "event_id": "o4",
                "type": "order",
                "ts": t + 3_700_000,
                "user_id": "u1",
                "brand_id": "gamma",
                "order_id": "G1",
                "amount_fen": 0,
            },
        ),
        ("orders", {**o1, "event_id": "o5"}),  # o1 re-sent: same order
        ("orders", x1),
        (  # a cancel before its order
            "orders",
            {
                **x1,
                "event_id": "x2",
                "user_id": "u4",
                "brand_id": "beta",
                "channel": "search",
                "room_id": ...,
                "order_id": "B2",
                "amount_fen": 1_000,
            },
        ),
        (
            "orders",
            {
                **o1,
                "event_id": "o6",
                "ts": t + 5_000,
                "user_id": "u4",
                "brand_id": "beta",
                "order_id": "B2",
                "amount_fen": 3_000,
                "qty": 1,
                "vip": False,
            },
        ),
        ("orders", {**x1, "event_id": "x3"}),  # x1 sent again with a new event_id
        ("orders", {**o1, "event_id": "o7", "order_id": "A9", "ts": END_MS}),  # after
    ]


# Worked out by hand from valid_events().
EXPECTED_TOTALS = {
    "clicks": 7,  # c1 c2 c3 c4 c5 c6 c9
    "carts": 3,  # k1 k2 k3
    "orders": 5,  # A1 A2 B1 G1 B2
    "cancels": 2,  # A2 B2
    "units": 8,  # 2 + 1 + 3 + 1 + 1
    "gross_gmv_fen": 43_550,  # 10,000 + 25,000 + 5,550 + 0 + 3,000
    "net_gmv_fen": 17_550,  # minus 25,000 and 1,000
    "vip_orders": 1,
    "buyers": 4,  # u1 u2 u3 u4
    "first_hour_gross_gmv_fen": 38_000,  # all but B1 and G1 (second hour)
}
EXPECTED_BRANDS = {  # brand: (clicks, carts, orders, cancels, gross, net)
    "alpha": (3, 1, 2, 1, 35_000, 10_000),
    "beta": (2, 1, 2, 1, 8_550, 7_550),
    "gamma": (2, 1, 1, 0, 0, 0),
}
EXPECTED_OUT_OF_WINDOW = 2  # c8, A9


@dataclass(frozen=True)
class Sent:
    topic: str  # short name
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str | None  # None: a valid event


def clean(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if v is not ...}


def interleave() -> list[tuple[str, bytes | None, str | None]]:
    """Bad and valid records mixed: one bad record after every valid one or so."""
    good = [(topic, js(clean(event)), None) for topic, event in valid_events()]
    bad = list(BAD)
    out: list[tuple[str, bytes | None, str | None]] = []
    while good or bad:
        if good:
            out.append(good.pop(0))
        for _ in range(2 if len(bad) > len(good) else 1):
            if bad:
                out.append(bad.pop(0))
    return out


def publish(
    env: Env, records: list[tuple[str, bytes | None, str | None]]
) -> list[Sent]:
    prefix = env.vars["PRESALE_TOPIC_PREFIX"]

    async def run() -> list[Sent]:
        producer = AIOKafkaProducer(
            bootstrap_servers=KAFKA, acks="all", max_request_size=2_000_000
        )
        await producer.start()
        sent: list[Sent] = []
        try:
            for i, (topic, value, reason) in enumerate(records):
                key = None if i % 4 == 0 else f"key-{i}".encode()
                meta = await producer.send_and_wait(
                    f"{prefix}.{topic}", value, key=key, partition=i % PARTITIONS
                )
                sent.append(
                    Sent(topic, meta.partition, meta.offset, key, value, reason)
                )
        finally:
            await producer.stop()
        return sent

    return asyncio.run(run())


def samples(worker: Worker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = worker.get("/metrics", worker.metrics_port).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def test_malformed_records_are_dead_lettered_and_valid_ones_counted() -> None:
    """35 malformed records of 35 kinds (all 8 reasons: bad and truncated JSON,
    NaN, 1e400, a lone surrogate, two objects, empty and null values, two kinds of
    invalid UTF-8, an array, a string and `null` as the value, missing fields, a
    livestream without room_id, strings/bools/floats for integers, 2^64, negative
    and too-big amounts, an unknown channel and type, 65- and 129-character ids,
    qty 0, ts -1, types on the wrong topic, a 900 KB record), interleaved with 23
    valid events over the three input topics and their 6 partitions, with one
    worker running. Then: consumer_lag 0; each bad record is on the dead-letter
    topic (at least once; measured: exactly once) with its reason, topic,
    partition, offset, key and raw bytes (raw, raw_b64, or the first 4,096 bytes
    of the 900 KB one); no valid record is there; dead_letters (35) and
    dead_letters_by_reason are exact, as is the Prometheus rejected counter; the
    counters equal a hand count (7 clicks, 3 carts, 5 orders, 2 cancels, gross
    43,550 fen, net 17,550 fen) and the independent batch reference's report;
    the worker never died and logged no traceback."""
    assert len({reason for _t, _v, reason in BAD}) == 8
    env = Env(
        {
            "PRESALE_CAMPAIGN_START_MS": str(T0_MS),
            "PRESALE_CAMPAIGN_END_MS": str(END_MS),
            # The default, written out: far below the 900 KB record and the
            # broker's 1 MB limit.
            "PRESALE_MAX_RECORD_BYTES": str(MAX_RECORD_BYTES),
        }
    )
    records = interleave()
    # The independent reference agrees with the reasons written above.
    # The worker's defaults: thresholds ¥10M and ¥100M, YoY floor ¥10k.
    campaign = reference.Campaign(
        "ref", T0_MS, END_MS, (1_000_000_000, 10_000_000_000), 1_000_000
    )
    for topic, value, reason in BAD:
        got = reference.validate(topic, value or b"", MAX_RECORD_BYTES)
        assert got == reason, (topic, (value or b"")[:80], got)

    with reset_after(env), workers(env, 1) as running:
        worker = running[0]
        sent = publish(env, records)
        live = settled_report(env, len(sent), running)
        metrics = samples(worker)
        worker.check_alive()
        assert "Traceback" not in worker.tail(1_000_000)
        assert worker.get("/health") == b'{"ok":true}'
    assert live["consumer_lag"] == 0

    prefix = env.vars["PRESALE_TOPIC_PREFIX"]
    letters: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    keys: dict[tuple[str, int, int], bytes | None] = {}
    for rec in read_topic(f"{prefix}.deadletter"):
        body = json.loads(rec.value)
        where = (body["topic"], body["partition"], body["offset"])
        letters.setdefault(where, []).append(body)
        keys[where] = rec.key
    bad_sent = [s for s in sent if s.reason is not None]
    wanted = {(f"{prefix}.{s.topic}", s.partition, s.offset): s for s in bad_sent}
    assert set(letters) == set(wanted)  # every bad record, and nothing valid
    # Dead letters are at least once (a retried batch sends its own again).
    repeats = sum(len(v) - 1 for v in letters.values())
    print(f"{len(bad_sent)} bad records, {repeats} repeated dead letters")
    for where, s in wanted.items():
        body = letters[where][0]
        assert body["reason"] == s.reason, (s, body)
        assert isinstance(body.get("detail"), str)
        assert keys[where] == s.key
        raw = s.value or b""
        if len(raw) > DEAD_LETTER_RAW_BYTES:
            assert body["truncated"] is True
            assert body["raw"].encode() == raw[:DEAD_LETTER_RAW_BYTES]
        elif "raw_b64" in body:
            assert s.reason == "invalid_utf8"
            assert base64.b64decode(body["raw_b64"]) == raw
        else:
            assert body["raw"].encode() == raw

    by_reason = Counter(s.reason for s in bad_sent)
    assert live["dead_letters"] == len(BAD)
    assert live["dead_letters_by_reason"] == dict(sorted(by_reason.items()))
    for reason, n in by_reason.items():
        assert metrics["presale_records_rejected_total", (("reason", reason),)] == n
    assert sum(
        v
        for (name, labels), v in metrics.items()
        if name == "presale_records_in_total" and ("type", "invalid") in labels
    ) == len(BAD)

    assert {k: live["totals"][k] for k in EXPECTED_TOTALS} == EXPECTED_TOTALS
    brands = {
        b["brand_id"]: (
            b["clicks"],
            b["carts"],
            b["orders"],
            b["cancels"],
            b["gross_gmv_fen"],
            b["net_gmv_fen"],
        )
        for b in live["brands"]
    }
    assert brands == EXPECTED_BRANDS
    assert live["out_of_window"] == EXPECTED_OUT_OF_WINDOW

    # The independent batch reference over the same records gives the same report.
    want = reference.build_report(
        reference.scan_records(
            ((s.topic, s.key, s.value or b"") for s in sent), campaign
        ),
        campaign,
    )
    want["campaign"]["id"] = live["campaign"]["id"]
    ignore = {"alerts", "consumer_lag", "watermark_ms"}
    assert (
        report_diff(
            {k: v for k, v in live.items() if k not in ignore},
            {k: v for k, v in want.items() if k not in ignore},
        )
        == []
    )
