"""Hand-made events and a feeder that plans and applies them, for the unit tests."""

from __future__ import annotations

from typing import Any

from processors.counting import CampaignRules, Record, plan_batch
from processors.events import Event, Rejection
from processors.state import Applied, CampaignState, apply_plan

T0 = 1_700_000_000_000  # campaign start; a multiple of 1,000 ms
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
END = T0 + 10 * DAY_MS


def rules(**overrides: Any) -> CampaignRules:
    """A campaign [T0, T0 + 10 days) with small thresholds: 1,000 and 5,000 fen."""
    options: dict[str, Any] = {
        "campaign_id": "c1",
        "start_ms": T0,
        "end_ms": END,
        "thresholds_fen": (1_000, 5_000),
        "baselines_fen": {},
        "yoy_min_baseline_fen": 1_000,
    }
    options.update(overrides)
    return CampaignRules(**options)


def click(event_id: str, ts: int = T0, brand: str = "b1", **kw: Any) -> Event:
    return Event(event_id, "click", ts, kw.pop("user", "u1"), brand, **kw)


def cart(event_id: str, ts: int = T0, brand: str = "b1", **kw: Any) -> Event:
    return Event(event_id, "cart", ts, kw.pop("user", "u1"), brand, **kw)


def order(
    order_id: str,
    amount_fen: int,
    ts: int = T0,
    brand: str = "b1",
    event_id: str | None = None,
    **kw: Any,
) -> Event:
    return Event(
        event_id or f"e-{order_id}",
        "order",
        ts,
        kw.pop("user", "u1"),
        brand,
        order_id=order_id,
        amount_fen=amount_fen,
        **kw,
    )


def cancel(
    order_id: str,
    amount_fen: int,
    ts: int = T0,
    brand: str = "b1",
    event_id: str | None = None,
    **kw: Any,
) -> Event:
    return Event(
        event_id or f"x-{order_id}",
        "cancel",
        ts,
        kw.pop("user", "u1"),
        brand,
        order_id=order_id,
        amount_fen=amount_fen,
        **kw,
    )


class Feed:
    """One campaign state fed batch by batch, each batch at the next offsets."""

    def __init__(self, campaign: CampaignRules | None = None) -> None:
        self.rules = campaign or rules()
        self.state = CampaignState()

    def records(self, items: list[Event | Rejection], tp: str) -> list[Record]:
        start = self.state.offsets.get(tp, -1) + 1
        return [(tp, start + i, item) for i, item in enumerate(items)]

    def send(
        self, *items: Event | Rejection, tp: str = "orders:0", now_ms: int = 0
    ) -> Applied:
        plan = plan_batch(self.records(list(items), tp), self.rules, self.state.offsets)
        result = apply_plan(self.state, plan, self.rules, now_ms)
        assert isinstance(result, Applied)
        return result

    def brand(self, brand_id: str = "b1") -> dict[str, int]:
        return self.state.brands[brand_id]
