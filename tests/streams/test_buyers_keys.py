"""Buyers keys through the production Lua step: a set of user ids, exact, up
to BUYERS_EXACT of them; past it a HyperLogLog of the same members, within 2%.

A small brand's buyers are then exact (the first-hour recording's brand b19813
has 64 buyers that a HyperLogLog counted as 61: three register collisions),
and a union of a set and a HyperLogLog, or of keys in several state shards,
counts right. Runs in a Redis of the test session's own (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

import redis

from processors.counting import CampaignRules, Record
from streams.store import BUYERS_EXACT, RedisStore
from tests.processors.make import T0, order, rules


def _orders(users: range | list[int], tag: str, **kw: Any) -> list[Any]:
    """One order of each user (`u<n>`), with fresh order ids (`tag`)."""
    return [order(f"{tag}-{n}", 100, ts=T0 + 1, user=f"u{n}", **kw) for n in users]


class Feed:
    """A RedisStore fed orders on one partition, batch after batch."""

    def __init__(self, url: str, campaign: CampaignRules) -> None:
        self.prefix = f"t:{{{uuid.uuid4().hex}}}:"
        self.store = RedisStore.from_url(url, self.prefix, campaign)
        self.offset = 0

    async def add(self, events: list[Any]) -> None:
        records: list[Record] = []
        for event in events:
            records.append(("orders:0", self.offset, event))
            self.offset += 1
        applied = await self.store.applied_offsets(["orders:0"])
        await self.store.apply(self.store.plan(records, applied), 0)

    async def report(self) -> dict[str, Any]:
        return await self.store.report()

    def keys(self, name: str) -> list[str]:
        return [p + name for p in self.store.shards]


def _brand(report: dict[str, Any], brand: str) -> dict[str, Any]:
    return next(b for b in report["brands"] if b["brand_id"] == brand)


def _within(count: int, exact: int) -> bool:
    return abs(count - exact) <= max(1, 0.02 * exact)


def test_a_buyers_key_is_an_exact_set_then_a_hyperloglog(step_redis_url: str) -> None:
    """Up to the limit the key is a set and every count is exact; adding the
    same buyers again changes nothing; the add that passes the limit turns it
    into a HyperLogLog (a string) of the same members, counted within 2%, and
    re-adding members it holds changes neither the key's type nor the count.
    The HyperLogLog depends on the members only: one batch of them all gives
    the count that batch after batch gave."""
    client = redis.Redis.from_url(step_redis_url)
    limit = BUYERS_EXACT

    async def run() -> None:
        feed = Feed(step_redis_url, rules())
        key = feed.keys("u:bc:b1:other")[0]
        region = feed.keys("u:rg:unknown")[0]
        try:
            await feed.add(_orders(range(limit), "a"))
            assert client.type(key) == b"set"
            assert client.type(region) == b"set"
            assert client.scard(key) == limit
            first = await feed.report()
            assert _brand(first, "b1")["buyers"] == limit
            assert first["totals"]["buyers"] == limit
            assert first["channels"]["other"]["buyers"] == limit
            assert first["regions"]["unknown"]["buyers"] == limit
            before = client.dump(key)
            await feed.add(_orders(range(limit), "again"))  # the same buyers
            assert client.dump(key) == before
            assert _brand(await feed.report(), "b1")["buyers"] == limit

            await feed.add(_orders(range(limit, limit + 1), "b"))  # one past it
            assert client.type(key) == b"string"
            assert client.getrange(key, 0, 3) == b"HYLL"
            await feed.add(_orders(range(limit + 1, 3 * limit), "c"))
            grown = await feed.report()
            counted = _brand(grown, "b1")["buyers"]
            assert _within(counted, 3 * limit), counted
            assert grown["totals"]["buyers"] == counted
            assert grown["regions"]["unknown"]["buyers"] == counted
            await feed.add(_orders(range(3 * limit), "d"))  # all of them again
            assert client.type(key) == b"string"
            assert _brand(await feed.report(), "b1")["buyers"] == counted

            whole = Feed(step_redis_url, rules())
            try:
                await whole.add(_orders(range(3 * limit), "e"))
                assert client.type(whole.keys("u:bc:b1:other")[0]) == b"string"
                assert _brand(await whole.report(), "b1")["buyers"] == counted
            finally:
                await whole.store.close()
        finally:
            await feed.store.close()

    asyncio.run(run())
    client.close()


def test_a_union_of_a_set_and_a_hyperloglog(step_redis_url: str) -> None:
    """A brand sold on two channels: 1,500 buyers on `store` (a HyperLogLog)
    and 40 on `livestream` (a set), 20 of them buyers on `store` too. The
    brand's buyers, the union, are within 2% of 1,520; the livestream's are
    exactly 40; the campaign's total is the brand's."""
    client = redis.Redis.from_url(step_redis_url)

    async def run() -> None:
        feed = Feed(step_redis_url, rules())
        try:
            await feed.add(_orders(range(1_500), "s", channel="store"))
            live = [*range(1_480, 1_500), *range(5_000, 5_020)]
            await feed.add(
                _orders(live, "l", channel="livestream", room_id="r1"),
            )
            assert client.type(feed.keys("u:bc:b1:store")[0]) == b"string"
            assert client.type(feed.keys("u:bc:b1:livestream")[0]) == b"set"
            report = await feed.report()
            brand = _brand(report, "b1")
            assert _within(brand["buyers"], 1_520), brand["buyers"]
            assert brand["by_channel"]["livestream"]["buyers"] == 40
            assert report["channels"]["livestream"]["buyers"] == 40
            assert report["totals"]["buyers"] == brand["buyers"]
            # Scratch keys are dropped after the count.
            pattern = feed.prefix.replace("{", "\\{").replace("}", "\\}") + "tmp:*"
            assert list(client.scan_iter(match=pattern)) == []
        finally:
            await feed.store.close()

    asyncio.run(run())
    client.close()


def test_buyers_over_two_state_shards(step_redis_url: str) -> None:
    """With two state shards a brand's orders land in both (by order id): a
    union of its shards' sets is exact (64 buyers, as many as b19813's in the
    first-hour recording, each buying twice); once the shards' keys are
    HyperLogLogs their union (copied under the campaign's tag) is within 2%,
    and so is a brand's union of those and another channel's sets."""
    client = redis.Redis.from_url(step_redis_url)
    campaign = replace(rules(), state_shards=2)

    async def run() -> None:
        feed = Feed(step_redis_url, campaign)
        keys = feed.keys("u:bc:b1:other")
        try:
            await feed.add(_orders(range(64), "a") + _orders(range(64), "b"))
            assert [client.type(k) for k in keys] == [b"set", b"set"]
            assert all(client.scard(k) < 64 for k in keys)
            report = await feed.report()
            assert _brand(report, "b1")["buyers"] == 64
            assert report["totals"]["buyers"] == 64
            assert report["regions"]["unknown"]["buyers"] == 64

            await feed.add(_orders(range(64, 2_500), "c"))
            kinds = [client.type(k) for k in keys]
            assert b"string" in kinds, kinds
            report = await feed.report()
            assert _within(_brand(report, "b1")["buyers"], 2_500)
            assert _within(report["totals"]["buyers"], 2_500)
            assert _within(report["regions"]["unknown"]["buyers"], 2_500)

            live = [*range(2_480, 2_500), *range(9_000, 9_020)]
            await feed.add(_orders(live, "l", channel="livestream", room_id="r1"))
            lives = [client.type(k) for k in feed.keys("u:bc:b1:livestream")]
            assert lives == [b"set", b"set"]
            report = await feed.report()
            brand = _brand(report, "b1")
            assert _within(brand["buyers"], 2_520), brand["buyers"]
            assert brand["by_channel"]["livestream"]["buyers"] == 40
            assert _within(brand["by_channel"]["other"]["buyers"], 2_500)
        finally:
            await feed.store.close()

    asyncio.run(run())
    client.close()


def test_a_count_depends_on_the_members_only(step_redis_url: str) -> None:
    """A union of sets that holds more than BUYERS_EXACT ids (two channels'
    700 buyers each, or one channel's 1,400 split over two state shards) is
    counted as one key holding them all would be: the HyperLogLog of those
    members, so the count does not depend on the shards or the channels;
    up to the limit the union is exact."""
    client = redis.Redis.from_url(step_redis_url)

    async def run() -> None:
        one = Feed(step_redis_url, rules())
        two = Feed(step_redis_url, replace(rules(), state_shards=2))
        split = Feed(step_redis_url, rules())
        try:
            await one.add(_orders(range(1_400), "a"))
            await two.add(_orders(range(1_400), "a"))
            await split.add(_orders(range(700), "s", channel="store"))
            await split.add(_orders(range(700, 1_400), "l", channel="search"))
            assert client.type(one.keys("u:bc:b1:other")[0]) == b"string"
            assert [client.type(k) for k in two.keys("u:bc:b1:other")] == [
                b"set",
                b"set",
            ]
            assert client.type(split.keys("u:bc:b1:store")[0]) == b"set"
            reports = [await f.report() for f in (one, two, split)]
            counted = {_brand(r, "b1")["buyers"] for r in reports}
            assert len(counted) == 1, counted
            assert _within(counted.pop(), 1_400)
            assert {r["totals"]["buyers"] for r in reports} == {
                _brand(reports[0], "b1")["buyers"]
            }
        finally:
            for f in (one, two, split):
                await f.store.close()

    asyncio.run(run())
    client.close()
