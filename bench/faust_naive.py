"""Peer b: the Faust agent most users write first, updating Redis per event.

`@app.agent` over the three topics, `async for event in stream.events()`, decode
and validate, `SADD` the id to dedupe (awaited: its answer decides), then one
non-transactional pipeline of `HINCRBY`s (and `PFADD`s) for the event's counters
at every scope: two Redis round trips per event. That is already kinder than the
one-await-per-command version a first draft often has.

Run: `python -m bench.faust_naive <topic prefix> <run id> <web port>` with the
workload's PRESALE_* campaign variables; the harness stops it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import faust
import redis.asyncio as aioredis

from bench.kafka_io import BOOTSTRAP, topic_names
from bench.peer_counts import (
    DEAD_LETTER,
    DUPLICATE,
    OUT_OF_WINDOW,
    Keys,
    crossed,
    decode,
    dedupe_key,
    increments,
    prefix,
    rules_from_env,
)
from bench.workload import CACHE_DIR
from processors.events import ORDER


def build(topic_prefix: str, run: str, web_port: int) -> faust.App:
    rules = rules_from_env()
    keys = Keys(prefix(run))
    datadir = CACHE_DIR / "faust-naive" / run
    Path(datadir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"bench-naive-{run}",
        broker=f"kafka://{BOOTSTRAP}",
        store="memory://",
        datadir=str(datadir),
        autodiscover=False,
        topic_partitions=6,
        consumer_auto_offset_reset="earliest",
        web_port=web_port,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
    )
    topics = app.topic(*topic_names(topic_prefix), value_serializer="raw")
    short_of = {name: name.rsplit(".", 1)[1] for name in topic_names(topic_prefix)}
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")

    @app.agent(topics)
    async def count(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            short = short_of[event.message.topic]
            decoded = decode(event.value, short)
            if decoded is None:
                await client.hincrby(keys.outcomes, DEAD_LETTER, 1)
                continue
            if not rules.start_ms <= decoded.ts_ms < rules.end_ms:
                await client.hincrby(keys.outcomes, OUT_OF_WINDOW, 1)
                continue
            kind, member = dedupe_key(decoded)
            if not await client.sadd(keys.dedupe(kind), member):
                await client.hincrby(keys.outcomes, DUPLICATE, 1)
                continue
            brand, channel = decoded.brand_id, decoded.channel
            pipe = client.pipeline(transaction=False)
            first_hour_at = -1  # where the brand's new first-hour total comes back
            for name, amount in increments(decoded, rules):
                if name == "first_hour_gross_gmv_fen":
                    first_hour_at = len(pipe)
                pipe.hincrby(keys.brand(brand), name, amount)
                pipe.hincrby(keys.brand_channel(brand), f"{channel}:{name}", amount)
                pipe.hincrby(keys.totals, name, amount)
                pipe.hincrby(keys.channels, f"{channel}:{name}", amount)
            if decoded.type == ORDER:
                for scope in ("t", f"b:{brand}", f"ch:{channel}", f"bc:{brand}"):
                    pipe.pfadd(keys.buyers(scope), decoded.user_id)
            results = await pipe.execute()
            if first_hour_at >= 0:
                after = int(results[first_hour_at])
                before = after - decoded.amount_fen
                for field, record in crossed(rules, brand, before, after):
                    await client.hsetnx(keys.milestones, field, record)

    return app


def main() -> None:
    topic_prefix, run, web_port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = build(topic_prefix, run, web_port)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    worker = faust.Worker(app, loglevel="warning", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
