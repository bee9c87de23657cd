"""The counters the peers (b: naive Faust, c: Quix Streams) keep, and their keys.

The peers compute what presale computes (CONTRACT section 3): per brand, brand x
channel, channel and campaign totals of clicks, carts, orders, cancels, units,
gross and net GMV, VIP orders, first-hour GMV, HyperLogLog buyers, dedupe by
`event_id` / `order_id`, first-hour milestones, and tallies of dead letters,
out-of-window events and duplicates. They validate with presale's own pure
`processors.events.validate`, so the comparison is of the engines, not of the
checks. Their keys live under `bench:{<run>}:`, apart from presale's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import orjson

from processors.counting import CampaignRules
from processors.events import CANCEL, CART, CLICK, ORDER, Event, validate
from streams.settings import Settings

# Outcome tallies in the `n` hash: with the four event counts of `t` they add
# up to the records consumed, which is how the harness sees a peer finish.
DUPLICATE: Final = "duplicates"
DEAD_LETTER: Final = "dead_letters"
OUT_OF_WINDOW: Final = "out_of_window"
EVENT_COUNTERS: Final = ("clicks", "carts", "orders", "cancels")
MAX_RECORD_BYTES: Final = 65_536


def prefix(run: str) -> str:
    return f"bench:{{{run}}}:"


def rules_from_env() -> CampaignRules:
    """The campaign of the workload, from the same PRESALE_* variables as d."""
    import os

    return Settings.from_env(os.environ).rules


def decode(value: bytes | None, topic: str) -> Event | None:
    """Bytes -> a valid event, or None for a record presale would dead-letter."""
    if value is None or len(value) > MAX_RECORD_BYTES:
        return None
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    decoded = validate(obj, topic)
    return decoded if type(decoded) is Event else None


def dedupe_key(event: Event) -> tuple[str, str]:
    """(set suffix, member): one id space per type, as the contract says."""
    if event.type in (CLICK, CART):
        return event.type, event.event_id
    assert event.order_id is not None
    return event.type, event.order_id


@dataclass(frozen=True, slots=True)
class Keys:
    p: str

    def dedupe(self, kind: str) -> str:
        return f"{self.p}dd:{kind}"

    def brand(self, brand: str) -> str:
        return f"{self.p}b:{brand}"

    def brand_channel(self, brand: str) -> str:
        return f"{self.p}bc:{brand}"

    @property
    def totals(self) -> str:
        return f"{self.p}t"

    @property
    def channels(self) -> str:
        return f"{self.p}ch"

    @property
    def outcomes(self) -> str:
        return f"{self.p}n"

    @property
    def milestones(self) -> str:
        return f"{self.p}ms"

    def buyers(self, scope: str) -> str:
        return f"{self.p}u:{scope}"


def increments(event: Event, rules: CampaignRules) -> Iterator[tuple[str, int]]:
    """(counter, amount) pairs one new event adds, at every scope."""
    kind = event.type
    if kind == CLICK:
        yield "clicks", 1
    elif kind == CART:
        yield "carts", 1
    elif kind == ORDER:
        yield "orders", 1
        yield "units", event.qty
        yield "gross_gmv_fen", event.amount_fen
        yield "net_gmv_fen", event.amount_fen
        if event.vip:
            yield "vip_orders", 1
        if event.ts_ms < rules.first_hour_end_ms:
            yield "first_hour_gross_gmv_fen", event.amount_fen
    elif kind == CANCEL:
        yield "cancels", 1
        yield "net_gmv_fen", -event.amount_fen


def crossed(
    rules: CampaignRules, brand: str, before_fen: int, after_fen: int
) -> Iterator[tuple[str, bytes]]:
    """Milestone fields and records for targets passed from before to after."""
    for target in rules.targets(brand):
        if before_fen < target.threshold_fen <= after_fen:
            field = f"{target.kind}:{brand}:{target.threshold_fen}"
            record = orjson.dumps(
                {
                    "kind": target.kind,
                    "brand_id": brand,
                    "threshold_fen": target.threshold_fen,
                }
            )
            yield field, record
