"""Redis memory of the dedupe state, per million events (issue: bounded state).

Applies N unique clicks (default 1,000,000) in batches of 20,000 through the real
Lua apply step into a scratch campaign, then reads Redis's own accounting:
`MEMORY USAGE` of every dedupe key, and the whole campaign's keys. Prints bytes
per event. Run: `.venv/bin/python -m bench.dedupe_memory [N]` with Redis up.
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


async def measure(n: int) -> None:
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
                e = Event(
                    event_id=f"evt-{i:012d}-{uuid.UUID(int=i).hex[:8]}",
                    type="click",
                    ts_ms=T0 + i * 3,
                    user_id=f"u{i % 100_000}",
                    brand_id=f"b{i % 5_000}",
                    channel="search",
                )
                records.append(("clicks:0", offset, e))
            plan = plan_batch(records, rules, {"clicks:0": start - 1})
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
        print(f"events applied           {n:,} unique clicks in {elapsed:.1f} s")
        print(f"dedupe sets              {dd_keys:,} keys, encodings {encodings}")
        print(
            f"dedupe memory            {dd_bytes * per_million / 2**20:.1f} MiB per"
            f" million events ({dd_bytes / n:.1f} bytes/event)"
        )
        print(
            f"counters, HLLs, rest     {other_bytes / 2**20:.1f} MiB"
            " (grows with brands and channels, not with events)"
        )
    finally:
        await store.reset()
        await store.close()


if __name__ == "__main__":
    asyncio.run(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
