"""Redis memory of the dedupe state, per million orders and per million clicks.

Applies N unique clicks, then N unique orders (default 1,000,000 each), in
batches of 20,000 through the real Lua apply step into scratch campaigns, then
reads Redis's own accounting: `MEMORY USAGE` of every dedupe key, and the
campaign's other keys. Prints bytes per event. Order ids are kept for the
campaign's life (`dd:o:*`), click ids for a horizon of event time
(`dd:<generation>:*`). Run: `.venv/bin/python -m bench.dedupe_memory [N]` with
Redis up.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

from processors.counting import CampaignRules, plan_batch
from processors.events import Event
from streams.settings import Settings
from streams.store import RedisStore

T0 = 1_760_529_600_000
BATCH = 20_000


async def measure(n: int, kind: str) -> None:
    settings = Settings.from_env({}, load=False)
    campaign = f"bench-dd-{uuid.uuid4().hex[:8]}"
    rules = CampaignRules(campaign, T0, T0 + 86_400_000)
    prefix = f"presale:{{{campaign}}}:"
    store = RedisStore.from_url(settings.redis_url, prefix, rules)
    await store.ping()
    started = time.perf_counter()
    try:
        offset = -1
        for start in range(0, n, BATCH):
            records = []
            for i in range(start, min(n, start + BATCH)):
                offset += 1
                ident = f"{i:012d}-{uuid.UUID(int=i).hex[:8]}"
                e = Event(
                    event_id=f"evt-{ident}",
                    type=kind,
                    ts_ms=T0 + i * 3,
                    user_id=f"u{i % 100_000}",
                    brand_id=f"b{i % 5_000}",
                    channel="search",
                    order_id=f"ord-{ident}" if kind == "order" else None,
                    amount_fen=100 if kind == "order" else 0,
                )
                records.append((f"{kind}s:0", offset, e))
            plan = plan_batch(records, rules, {f"{kind}s:0": start - 1})
            await store.apply(plan, 0)
        elapsed = time.perf_counter() - started
        dd_bytes = other_bytes = dd_keys = 0
        async for key in store.client.scan_iter(
            match=prefix.replace("{", "\\{").replace("}", "\\}") + "*", count=1000
        ):
            used = await store.client.memory_usage(key, samples=0) or 0
            if b":dd:" in key:
                dd_bytes += used
                dd_keys += 1
            else:
                other_bytes += used
        encodings = {}
        async for key in store.client.scan_iter(
            match=prefix.replace("{", "\\{").replace("}", "\\}") + "dd:*", count=100
        ):
            enc = (await store.client.object("encoding", key)).decode()
            encodings[enc] = encodings.get(enc, 0) + 1
            if sum(encodings.values()) >= 200:
                break
        per_million = 1_000_000 / n
        print(f"events applied           {n:,} unique {kind}s in {elapsed:.1f} s")
        print(f"dedupe sets              {dd_keys:,} keys, encodings {encodings}")
        print(
            f"dedupe memory            {dd_bytes * per_million / 2**20:.1f} MiB per"
            f" million {kind}s ({dd_bytes / n:.1f} bytes per {kind})"
        )
        print(
            f"counters, HLLs, rest     {other_bytes / 2**20:.1f} MiB"
            " (grows with brands, channels and buyers, not with ids)"
        )
    finally:
        await store.reset()
        await store.close()


async def main(n: int) -> None:
    for kind in ("click", "order"):
        await measure(n, kind)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
