"""GET /report on a real worker (issue 16): bad query values answer 400, a burst
of parallel requests costs one build a second, built in its own thread; Faust's
own /router/ and /table/ pages are not served.

Before the fix `?top=²` answered 500 (it passes `isdigit()` and fails `int()`),
`?top=-1` and `?top=10**30` the whole report, each request built its own report
with a new Kafka client on the worker's loop, and /router/ listed the cluster.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from streams.settings import Settings
from streams.webreport import BadQuery, ReportBuilder, parse_report_top
from tests.support.services import STREAMS, Env, Worker

pytestmark = pytest.mark.integration


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


@pytest.mark.parametrize(
    "raw", ["²", "٣", "-1", "0", "100001", "1" * 40, "1e3", " 5", "", "5x", "+5"]
)
def test_bad_top_is_refused(raw: str) -> None:
    with pytest.raises(BadQuery):
        parse_report_top(raw)


@pytest.mark.parametrize(("raw", "want"), [(None, None), ("1", 1), ("100000", 10**5)])
def test_good_top(raw: str | None, want: int | None) -> None:
    assert parse_report_top(raw) == want


def test_worker_report_endpoint() -> None:
    env = Env()
    worker = Worker(env, "web").start()
    try:
        env.replay(STREAMS / "small.jsonl.gz")
        env.wait_applied(alive=[worker])
        base = f"http://127.0.0.1:{worker.web_port}"
        for bad in ("%C2%B2", "-1", "0", "1" * 30, "abc", ""):
            assert status(f"{base}/report?top={bad}") == 400, bad
        body = json.loads(urllib.request.urlopen(f"{base}/report?top=3").read())
        assert len(body["brands"]) == 3 and body["consumer_lag"] == 0
        full = env.report()
        assert body == full | {"brands": full["brands"][:3]}
        # Faust's own pages are off.
        for path in ("/router/", "/table/", "/graph/", "/performance/"):
            assert status(base + path) == 404, path
        # 40 parallel requests: all 200, and they answer in a second or two
        # (one build, then the cache), not 40 builds.
        with ThreadPoolExecutor(40) as pool:
            codes = list(pool.map(status, [f"{base}/report"] * 40))
        assert codes == [200] * 40
    finally:
        worker.stop()


def test_parallel_requests_share_one_build() -> None:
    """40 requests at once, on the caller's loop, cost one build: the first
    builds, the others wait on its lock and take its result."""
    env = Env()
    settings = Settings.from_env(env.vars, load=False)
    builder = ReportBuilder(settings)

    async def burst() -> list[bytes]:
        return await asyncio.gather(*(builder.get(5) for _ in range(40)))

    try:
        bodies = asyncio.run(burst())
        assert builder.builds == 1
        assert len(set(bodies)) == 1
        assert json.loads(bodies[0])["campaign"]["id"] == settings.campaign_id
    finally:
        builder.close()
