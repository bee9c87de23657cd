"""Peer a, the ceiling: an aiokafka `getmany` loop that only decodes with orjson.

No Redis, no validation, no group: it is assigned every partition, reads from
the start with the fetch settings Faust gives presale's consumer (20,000 records
a poll, 1 MiB per partition, 1.5 s max wait) and stops at the end offsets it
read before starting. It prints one JSON line: when the first batch arrived,
the records and CPU seconds from then to the end, and its peak RSS.

Run: `python -m bench.raw_loop <topic prefix>`.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.kafka_io import BOOTSTRAP, topic_names
from bench.procstat import peak_rss_bytes
from bench.workload import PARTITIONS


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(prefix: str) -> dict[str, float]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        enable_auto_commit=False,
        # No group, no commits: every partition starts at the beginning. (A
        # seek_to_beginning() right after assign() races aiokafka's own reset
        # to "latest" and sometimes loses: the loop then waits forever.)
        auto_offset_reset="earliest",
        # The fetch settings of presale's worker (streams/batching.py, settings).
        max_partition_fetch_bytes=1_048_576,
        fetch_max_wait_ms=20,
        max_poll_records=40_000,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(n, p) for n in topic_names(prefix) for p in range(6)]
        assert len(tps) == 3 * PARTITIONS
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        left = {tp: end for tp, end in ends.items() if end > 0}
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        first_s = first_cpu = 0.0
        first_n = total = invalid = 0
        while left:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            for tp, records in batch.items():
                for record in records:
                    try:
                        loads(record.value)
                    except decode_error:
                        invalid += 1
                total += len(records)
                if records and records[-1].offset + 1 >= left.get(tp, 0):
                    left.pop(tp, None)
            if not first_s and total:
                first_s, first_cpu, first_n = time.time(), _cpu_s(), total
        end_s, end_cpu = time.time(), _cpu_s()
    finally:
        await consumer.stop()
    return {
        "first_s": first_s,
        "first_n": first_n,
        "first_cpu_s": first_cpu,
        "end_s": end_s,
        "end_cpu_s": end_cpu,
        "records": total,
        "invalid_json": invalid,
        "peak_rss_bytes": peak_rss_bytes("self") or 0,
    }


if __name__ == "__main__":
    result = asyncio.run(run(sys.argv[1]))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
