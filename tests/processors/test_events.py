"""processors.events.validate against every rule of docs/validation.md."""

from __future__ import annotations

from typing import Any

import pytest

from processors.events import Event, Rejection, validate

DROP = object()  # an override that removes the field

# One valid event of each type, with only the required fields.
BASE: dict[str, dict[str, Any]] = {
    "click": {"event_id": "e1", "type": "click", "ts": 1_000, "user_id": "u1",
              "brand_id": "b1"},
    "cart": {"event_id": "e1", "type": "cart", "ts": 1_000, "user_id": "u1",
             "brand_id": "b1"},
    "order": {"event_id": "e1", "type": "order", "ts": 1_000, "user_id": "u1",
              "brand_id": "b1", "order_id": "o1", "amount_fen": 100},
    "cancel": {"event_id": "e1", "type": "cancel", "ts": 1_000, "user_id": "u1",
               "brand_id": "b1", "order_id": "o1", "amount_fen": 100},
}  # fmt: skip
TOPIC = {"click": "clicks", "cart": "carts", "order": "orders", "cancel": "orders"}

# docs/validation.md, "Fields, in check order".
FIELD_ORDER = (
    "event_id",
    "type",
    "ts",
    "user_id",
    "brand_id",
    "sku_id",
    "channel",
    "room_id",
    "region",
    "vip",
    "qty",
    "order_id",
    "amount_fen",
)


def event(kind: str = "click", **overrides: Any) -> dict[str, Any]:
    """A valid event of `kind` with fields replaced, or dropped with DROP."""
    obj = dict(BASE[kind])
    for name, value in overrides.items():
        if value is DROP:
            obj.pop(name, None)
        else:
            obj[name] = value
    return obj


def reason(obj: Any, topic: str) -> str:
    """The outcome: "ok" for an accepted event, else the rejection's reason."""
    result = validate(obj, topic)
    if isinstance(result, Event):
        return "ok"
    assert isinstance(result, Rejection)
    assert result.detail  # every rejection carries a human detail
    return result.reason


def check(kind: str, **overrides: Any) -> str:
    return reason(event(kind, **overrides), TOPIC[kind])


# (id, event type, overrides, expected)
FIELD_ROWS: list[tuple[str, str, dict[str, Any], str]] = [
    # event_id: string, required, 1-128
    ("event_id missing", "click", {"event_id": DROP}, "missing_field"),
    ("event_id null", "click", {"event_id": None}, "missing_field"),
    ("event_id int", "click", {"event_id": 7}, "wrong_type"),
    ("event_id list", "click", {"event_id": ["e1"]}, "wrong_type"),
    ("event_id empty", "click", {"event_id": ""}, "bad_value"),
    # type: string, required, enum
    ("type missing", "click", {"type": DROP}, "missing_field"),
    ("type null", "click", {"type": None}, "missing_field"),
    ("type int", "click", {"type": 1}, "wrong_type"),
    ("type bool", "click", {"type": True}, "wrong_type"),
    ("type refund", "order", {"type": "refund"}, "bad_value"),
    ("type Click", "click", {"type": "Click"}, "bad_value"),
    ("type empty", "click", {"type": ""}, "bad_value"),
    # ts: integer, required, 0..2^53-1
    ("ts missing", "cart", {"ts": DROP}, "missing_field"),
    ("ts null", "cart", {"ts": None}, "missing_field"),
    ("ts string", "click", {"ts": "1000"}, "wrong_type"),
    ("ts true", "click", {"ts": True}, "wrong_type"),
    ("ts false", "click", {"ts": False}, "wrong_type"),
    ("ts 1000.0", "click", {"ts": 1000.0}, "wrong_type"),
    ("ts 0", "click", {"ts": 0}, "ok"),
    ("ts -1", "click", {"ts": -1}, "bad_value"),
    ("ts 2^53-1", "click", {"ts": 2**53 - 1}, "ok"),
    ("ts 2^53", "click", {"ts": 2**53}, "bad_value"),
    # user_id: string, required
    ("user_id missing", "order", {"user_id": DROP}, "missing_field"),
    ("user_id null", "click", {"user_id": None}, "missing_field"),
    ("user_id int", "click", {"user_id": 42}, "wrong_type"),
    # brand_id: string, required
    ("brand_id missing", "cancel", {"brand_id": DROP}, "missing_field"),
    ("brand_id null", "click", {"brand_id": None}, "missing_field"),
    ("brand_id dict", "click", {"brand_id": {"id": "b1"}}, "wrong_type"),
    # sku_id: optional string
    ("sku_id absent", "click", {}, "ok"),
    ("sku_id null", "click", {"sku_id": None}, "ok"),
    ("sku_id int", "click", {"sku_id": 7}, "wrong_type"),
    ("sku_id empty", "click", {"sku_id": ""}, "bad_value"),
    # channel: optional enum
    ("channel null", "click", {"channel": None}, "ok"),
    ("channel int", "click", {"channel": 3}, "wrong_type"),
    ("channel tv", "click", {"channel": "tv"}, "bad_value"),
    ("channel Search", "click", {"channel": "Search"}, "bad_value"),
    ("channel empty", "click", {"channel": ""}, "bad_value"),
    # room_id: required only on livestream, checked whenever present
    ("livestream no room", "click", {"channel": "livestream"}, "missing_field"),
    ("livestream null room", "cart", {"channel": "livestream", "room_id": None},
     "missing_field"),
    ("livestream room", "order", {"channel": "livestream", "room_id": "r1"}, "ok"),
    ("livestream room int", "click", {"channel": "livestream", "room_id": 9},
     "wrong_type"),
    ("livestream room empty", "click", {"channel": "livestream", "room_id": ""},
     "bad_value"),
    ("search, no room", "click", {"channel": "search"}, "ok"),
    ("search, room given", "click", {"channel": "search", "room_id": "r1"}, "ok"),
    ("search, room empty", "click", {"channel": "search", "room_id": ""},
     "bad_value"),
    ("no channel, room int", "click", {"room_id": 1}, "wrong_type"),
    ("flash_sale no room", "order", {"channel": "flash_sale"}, "ok"),
    # region: optional string
    ("region null", "click", {"region": None}, "ok"),
    ("region int", "click", {"region": 86}, "wrong_type"),
    ("region empty", "click", {"region": ""}, "bad_value"),
    # vip: optional bool; never an int, never a string
    ("vip true", "click", {"vip": True}, "ok"),
    ("vip false", "click", {"vip": False}, "ok"),
    ("vip null", "click", {"vip": None}, "ok"),
    ("vip 'true'", "click", {"vip": "true"}, "wrong_type"),
    ("vip 'false'", "click", {"vip": "false"}, "wrong_type"),
    ("vip 1", "click", {"vip": 1}, "wrong_type"),
    ("vip 0", "click", {"vip": 0}, "wrong_type"),
    # qty: optional integer 1..1,000,000, checked on every type
    ("qty null", "cart", {"qty": None}, "ok"),
    ("qty '2'", "cart", {"qty": "2"}, "wrong_type"),
    ("qty 2.0", "order", {"qty": 2.0}, "wrong_type"),
    ("qty true", "cart", {"qty": True}, "wrong_type"),
    ("qty 0", "cart", {"qty": 0}, "bad_value"),
    ("qty -1", "order", {"qty": -1}, "bad_value"),
    ("qty 1", "cart", {"qty": 1}, "ok"),
    ("qty 1e6", "order", {"qty": 1_000_000}, "ok"),
    ("qty 1e6+1", "cart", {"qty": 1_000_001}, "bad_value"),
    ("click qty 0", "click", {"qty": 0}, "bad_value"),
    ("click qty 5", "click", {"qty": 5}, "ok"),
    # order_id: required for order and cancel; checked when present elsewhere
    ("order no order_id", "order", {"order_id": DROP}, "missing_field"),
    ("cancel no order_id", "cancel", {"order_id": DROP}, "missing_field"),
    ("order null order_id", "order", {"order_id": None}, "missing_field"),
    ("order order_id int", "order", {"order_id": 1}, "wrong_type"),
    ("order order_id empty", "order", {"order_id": ""}, "bad_value"),
    ("click no order_id", "click", {}, "ok"),
    ("cart no order_id", "cart", {}, "ok"),
    ("click order_id empty", "click", {"order_id": ""}, "bad_value"),
    ("click order_id given", "click", {"order_id": "o1"}, "ok"),
    # amount_fen: required for order and cancel, integer 0..10^12
    ("order no amount", "order", {"amount_fen": DROP}, "missing_field"),
    ("cancel no amount", "cancel", {"amount_fen": DROP}, "missing_field"),
    ("cancel null amount", "cancel", {"amount_fen": None}, "missing_field"),
    ("amount 1.0", "order", {"amount_fen": 1.0}, "wrong_type"),
    ("amount 1.5", "order", {"amount_fen": 1.5}, "wrong_type"),
    ("amount '100'", "order", {"amount_fen": "100"}, "wrong_type"),
    ("amount false", "order", {"amount_fen": False}, "wrong_type"),
    ("amount true", "cancel", {"amount_fen": True}, "wrong_type"),
    ("amount 0", "order", {"amount_fen": 0}, "ok"),
    ("amount -1", "order", {"amount_fen": -1}, "bad_value"),
    ("amount 10^12", "cancel", {"amount_fen": 10**12}, "ok"),
    ("amount 10^12+1", "order", {"amount_fen": 10**12 + 1}, "bad_value"),
    ("click amount -1", "click", {"amount_fen": -1}, "bad_value"),
    ("cart amount 1.5", "cart", {"amount_fen": 1.5}, "wrong_type"),
    ("click amount 5", "click", {"amount_fen": 5}, "ok"),
    # unknown extra fields are ignored, whatever they hold
    ("extra fields", "order",
     {"coupon": {"x": [1, None]}, "note": 1.5, "vipp": "yes", "": None,
      "amount": -1, "Type": 3}, "ok"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "overrides", "expected"),
    [row[1:] for row in FIELD_ROWS],
    ids=[row[0] for row in FIELD_ROWS],
)
def test_field_rule(kind: str, overrides: dict[str, Any], expected: str) -> None:
    """Each field's missing / wrong_type / bad_value case gets the reason
    docs/validation.md gives it (JSON null counts as absent, bools and floats are
    never integers, strings never booleans, unknown fields are ignored)."""
    assert check(kind, **overrides) == expected


# Length limits in code points: (field, limit, event type, extra overrides).
LENGTH_FIELDS = [
    ("event_id", 128, "click", {}),
    ("user_id", 128, "click", {}),
    ("brand_id", 64, "click", {}),
    ("sku_id", 128, "cart", {}),
    ("room_id", 128, "click", {"channel": "livestream"}),
    ("region", 64, "order", {}),
    ("order_id", 128, "cancel", {}),
]
LENGTH_ROWS = [
    (f"{name} {n}x{char!r}", kind, {**extra, name: char * n},
     "ok" if 1 <= n <= limit else "bad_value")
    for name, limit, kind, extra in LENGTH_FIELDS
    for n in (0, 1, limit, limit + 1)
    for char in ("a", "张", "\U0001f600")  # 1, 3 and 4 UTF-8 bytes: chars count
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "overrides", "expected"),
    [row[1:] for row in LENGTH_ROWS],
    ids=[row[0] for row in LENGTH_ROWS],
)
def test_length_edges(kind: str, overrides: dict[str, Any], expected: str) -> None:
    """Strings are 1..limit Unicode characters (not bytes), at exactly the edges:
    0 and limit+1 are bad_value; 1 and limit (128, or 64 for brand_id and region)
    pass."""
    assert check(kind, **overrides) == expected


ALL_PAIRS = [(kind, topic) for kind in BASE for topic in ("clicks", "carts", "orders")]


@pytest.mark.parametrize(("kind", "topic"), ALL_PAIRS)
def test_topic_pairing(kind: str, topic: str) -> None:
    """clicks carries click, carts carries cart, orders carries order and cancel;
    every other pairing of a valid event is topic_mismatch."""
    fits = {
        ("click", "clicks"),
        ("cart", "carts"),
        ("order", "orders"),
        ("cancel", "orders"),
    }
    expected = "ok" if (kind, topic) in fits else "topic_mismatch"
    assert reason(event(kind), topic) == expected


@pytest.mark.parametrize(
    ("overrides", "topic", "expected"),
    [
        # earlier checks beat the mismatch
        ({"event_id": DROP}, "orders", "missing_field"),
        ({"event_id": ""}, "carts", "bad_value"),
        ({"type": "view"}, "orders", "bad_value"),
        ({"type": 5}, "orders", "wrong_type"),
        # the mismatch beats every later field
        ({"ts": DROP}, "orders", "topic_mismatch"),
        ({"ts": "x", "user_id": 1, "qty": 0, "vip": "no"}, "carts", "topic_mismatch"),
        ({"channel": "livestream"}, "orders", "topic_mismatch"),
    ],
)
def test_topic_mismatch_is_checked_right_after_type(
    overrides: dict[str, Any], topic: str, expected: str
) -> None:
    """topic_mismatch comes right after `type`: a defect in event_id or type wins
    over it, and it wins over a defect in any later field."""
    assert reason(event("click", **overrides), topic) == expected


# For each field: a value that is the wrong JSON type, and one that is the right
# type but out of range (None where the field has no range: vip).
WRONG_TYPE = {name: [name] for name in FIELD_ORDER}  # a list is no field's type
BAD_VALUE: dict[str, Any] = {
    "event_id": "",
    "type": "refund",
    "ts": -1,
    "user_id": "",
    "brand_id": "b" * 65,
    "sku_id": "",
    "channel": "tv",
    "room_id": "",
    "region": "",
    "vip": None,
    "qty": 0,
    "order_id": "",
    "amount_fen": -1,
}


@pytest.mark.parametrize("first", FIELD_ORDER)
def test_first_wrong_type_wins_over_later_bad_values(first: str) -> None:
    """When `first` has the wrong type and every later field is out of range, the
    reason is wrong_type: the first failing field in table order decides."""
    i = FIELD_ORDER.index(first)
    later = {
        name: BAD_VALUE[name]
        for name in FIELD_ORDER[i + 1 :]
        if BAD_VALUE[name] is not None
    }
    assert check("order", **later, **{first: WRONG_TYPE[first]}) == "wrong_type"


@pytest.mark.parametrize("first", [f for f in FIELD_ORDER if f != "vip"])
def test_first_bad_value_wins_over_later_wrong_types(first: str) -> None:
    """When `first` is out of range and every later field has the wrong type, the
    reason is bad_value."""
    i = FIELD_ORDER.index(first)
    later = {name: WRONG_TYPE[name] for name in FIELD_ORDER[i + 1 :]}
    assert check("order", **later, **{first: BAD_VALUE[first]}) == "bad_value"


@pytest.mark.parametrize(
    "first", ["event_id", "type", "ts", "user_id", "brand_id", "order_id"]
)
def test_first_missing_wins_over_later_defects(first: str) -> None:
    """A missing required field wins over wrong types in every later field."""
    i = FIELD_ORDER.index(first)
    later = {name: WRONG_TYPE[name] for name in FIELD_ORDER[i + 1 :]}
    assert check("order", **later, **{first: DROP}) == "missing_field"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"ts": "x", "qty": 0}, "wrong_type"),
        ({"user_id": None, "brand_id": 1}, "missing_field"),
        ({"channel": "tv", "vip": "yes"}, "bad_value"),
        ({"channel": "livestream", "region": ""}, "missing_field"),
        ({"qty": 0, "order_id": DROP}, "bad_value"),
        ({"order_id": DROP, "amount_fen": 1.5}, "missing_field"),
        ({"vip": 1, "qty": 0, "amount_fen": -1}, "wrong_type"),
    ],
)
def test_reason_precedence_pairs(overrides: dict[str, Any], expected: str) -> None:
    """Hand-picked records with two or three defects get the earlier field's
    reason."""
    assert check("order", **overrides) == expected


@pytest.mark.parametrize(
    "obj", [[], [BASE["click"]], "click", 42, 1.5, None, True, False]
)
def test_not_object(obj: Any) -> None:
    """A JSON value that is not an object is not_object."""
    assert reason(obj, "clicks") == "not_object"


def test_defaults_filled() -> None:
    """An event with only the required fields gets channel other, region
    unknown, qty 1, vip False, and no sku_id, room_id or order_id."""
    assert validate(event("click"), "clicks") == Event(
        event_id="e1",
        type="click",
        ts_ms=1_000,
        user_id="u1",
        brand_id="b1",
        channel="other",
        room_id=None,
        region="unknown",
        vip=False,
        qty=1,
        order_id=None,
        amount_fen=0,
        sku_id=None,
    )


def test_nulls_take_defaults() -> None:
    """JSON null in every optional field is the same as leaving it out."""
    nulls = dict.fromkeys(
        ("sku_id", "channel", "room_id", "region", "vip", "qty"), None
    )
    assert validate(event("order", **nulls), "orders") == validate(
        event("order"), "orders"
    )


def test_all_fields_kept() -> None:
    """A full order keeps every field's value, and ts becomes ts_ms."""
    obj = event(
        "order",
        ts=123,
        channel="livestream",
        room_id="r9",
        region="CN-BJ",
        vip=True,
        qty=3,
        sku_id="s1",
        order_id="o7",
        amount_fen=4_500,
        unknown_field="ignored",
    )
    assert validate(obj, "orders") == Event(
        event_id="e1",
        type="order",
        ts_ms=123,
        user_id="u1",
        brand_id="b1",
        channel="livestream",
        room_id="r9",
        region="CN-BJ",
        vip=True,
        qty=3,
        order_id="o7",
        amount_fen=4_500,
        sku_id="s1",
    )


def test_cancel_keeps_its_amount() -> None:
    """A cancel carries the value it takes back in amount_fen."""
    result = validate(event("cancel", amount_fen=250), "orders")
    assert isinstance(result, Event)
    assert (result.type, result.order_id, result.amount_fen) == ("cancel", "o1", 250)


def test_input_not_mutated() -> None:
    """validate reads its input and does not fill defaults into it."""
    obj = event("click")
    before = dict(obj)
    validate(obj, "clicks")
    assert obj == before
