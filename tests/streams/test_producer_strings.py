"""Producer strings are data (CONTRACT section 2, issue 16): control and format
characters are refused at validation, lookalike ids count as one, and every
terminal view shows a string as text, never as markup or raw escapes.

The validation and terminal tests failed before the fix (75 of 84): the
validator accepted `\\x1b[2J` and `Apple\\u200b` and counted `Ａpple` apart from
`Apple`; `presale report` died with MarkupError on a brand named `[/]`, turned
`[link=...]` into a link and wrote a raw ESC to the terminal. The live-page test
guards what already held (textContent only).
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from rich.console import Console

from processors.events import BAD_VALUE, Event, Rejection
from seeds import reference
from streams.codecs import decode, decode_exactly
from streams.report import shape_report, table
from streams.top import frame
from tests.streams.test_live import view
from tests.streams.test_report import RULES

LIMIT = 65_536
ORDER: dict[str, Any] = {
    "event_id": "e1",
    "type": "order",
    "ts": 1_000,
    "user_id": "u1",
    "brand_id": "b1",
    "order_id": "o1",
    "amount_fen": 100,
    "channel": "livestream",
    "room_id": "r1",
    "region": "ZJ",
    "sku_id": "s1",
}
TEXT_FIELDS = ("event_id", "user_id", "brand_id", "sku_id", "room_id", "region")
TEXT_FIELDS += ("order_id",)
# Cc: NUL, ESC (clears the screen), DEL, a C1 control; Cf: zero-width space,
# right-to-left override, soft hyphen, zero-width joiner, BOM.
FORBIDDEN = ("\x00", "\x1b[2J", "a\x7f", "\x85", "\u200b", "\u202e", "\u00ad")
FORBIDDEN += ("\u200d", "\ufeff")


def both_paths(obj: dict[str, Any]) -> Event | Rejection:
    """The worker's answer, held equal to the exact path's and the reference's."""
    value = json.dumps(obj, ensure_ascii=False).encode()
    got = decode(value, "orders", LIMIT)
    assert got == decode_exactly(value, "orders")
    ref = reference.validate("orders", value, LIMIT)
    if isinstance(got, Event):
        assert isinstance(ref, reference.Event), ref
        assert (ref.brand_id, ref.room_id, ref.region) == (
            got.brand_id,
            got.room_id,
            got.region,
        )
        assert (ref.event_id, ref.order_id) == (got.event_id, got.order_id)
    else:
        assert ref == got.reason
    return got


@pytest.mark.parametrize("field", TEXT_FIELDS)
@pytest.mark.parametrize("bad", FORBIDDEN)
def test_control_and_format_characters_are_refused(field: str, bad: str) -> None:
    """A Cc or Cf character anywhere in any string field: bad_value, naming it."""
    got = both_paths({**ORDER, field: "x" + bad + "y"})
    assert isinstance(got, Rejection)
    assert got.reason == BAD_VALUE
    assert field in got.detail and "U+" in got.detail


@pytest.mark.parametrize(
    "text",
    ["[/]", "[link=https://example.invalid]x[/link]", "[bold red]x", "<b>x</b>"],
)
def test_markup_lookalikes_are_valid_data(text: str) -> None:
    """Brackets are data: accepted as sent, shown as sent (below)."""
    got = both_paths({**ORDER, "brand_id": text, "room_id": text})
    assert isinstance(got, Event)
    assert got.brand_id == text and got.room_id == text


@pytest.mark.parametrize(
    ("sent", "counted"),
    [
        ("Ａpple", "Apple"),  # fullwidth A
        ("Apple", "Apple"),
        ("ｱｯﾌﾟﾙ", "アップル"),  # halfwidth katakana
        ("e\u0301", "é"),  # composed
        ("Ⅸ", "IX"),
        ("ﬁ", "fi"),
    ],
)
def test_ids_are_counted_nfkc(sent: str, counted: str) -> None:
    """brand_id, room_id and region normalised to NFKC: lookalikes are one id."""
    got = both_paths({**ORDER, "brand_id": sent, "room_id": sent, "region": sent})
    assert isinstance(got, Event)
    assert (got.brand_id, got.room_id, got.region) == (counted, counted, counted)


def test_dedupe_ids_are_compared_as_sent() -> None:
    """event_id, order_id (and user_id, sku_id) are not normalised."""
    got = both_paths({**ORDER, "event_id": "Ｅ1", "order_id": "Ｏ1", "user_id": "Ｕ"})
    assert isinstance(got, Event)
    assert (got.event_id, got.order_id, got.user_id) == ("Ｅ1", "Ｏ1", "Ｕ")


@pytest.mark.parametrize(
    ("brand", "ok"),
    [
        ("\ufdfa" * 3, True),  # 3 sent, 54 after NFKC
        ("\ufdfa" * 4, False),  # 4 sent, 72 after NFKC: over 64
        ("e\u0301" * 64, True),  # 128 sent, 64 after NFKC
        ("e\u0301" * 65, False),
    ],
)
def test_length_limits_apply_after_normalisation(brand: str, ok: bool) -> None:
    got = both_paths({**ORDER, "brand_id": brand})
    assert isinstance(got, Event) is ok
    if not ok:
        assert isinstance(got, Rejection) and got.reason == BAD_VALUE


def test_lookalikes_count_as_one_brand_in_the_reference() -> None:
    """Two orders of `Ａpple` and `Apple` make one brand in the independent
    reference; `Apple\\u200b` is a dead letter."""
    records = [
        ("orders", None, json.dumps({**ORDER, "brand_id": b, "order_id": f"o{i}"}))
        for i, b in enumerate(["Ａpple", "Apple", "Apple\u200b"])
    ]
    campaign = reference.Campaign(
        campaign_id="c1",
        start_ms=0,
        end_ms=10**12,
        milestones_fen=(10**9,),
        yoy_min_baseline_fen=0,
    )
    scanned = reference.scan_records(
        [(t, k, v.encode()) for t, k, v in records], campaign
    )
    result = reference.build_report(scanned, campaign)
    brands = {b["brand_id"]: b for b in result["brands"]}
    assert list(brands) == ["Apple"]
    assert brands["Apple"]["orders"] == 2
    assert result["dead_letters"] == 1


# What a terminal must never receive from a producer's string.
NASTY = ["[/]", "[link=https://example.invalid]x[/link]", "a\x1b[2Jb", "c\u202ed"]


def _render(renderable: Any, terminal: bool) -> str:
    out = io.StringIO()
    console = Console(
        file=out, width=250, force_terminal=terminal, color_system=None, record=False
    )
    console.print(renderable)
    return out.getvalue()


def _report_with(names: list[str]) -> dict[str, Any]:
    from streams.report import BrandRow

    rows = [
        BrandRow(n, {"gross_gmv_fen": 100 - i}, 0, {}, {}) for i, n in enumerate(names)
    ]
    alerts = [
        {
            "alert_id": f"room:{n}:0",
            "scope": "room",
            "key": n,
            "minute_ms": 0,
            "observed": 50,
            "baseline": 10.0,
            "ratio": 5.0,
            "severity": "critical",
            "raised_at_ms": 0,
        }
        for n in names
    ]
    return shape_report(
        rules=RULES,
        totals={},
        buyers=0,
        channels={},
        channel_buyers={},
        brands=rows,
        milestones=[],
        dead_letters={},
        out_of_window=0,
        watermark_ms=0,
        alerts=alerts,
    )


def _view_with(names: list[str]) -> dict[str, Any]:
    v = view(len(names))
    for row, name in zip(v["brands"], names, strict=True):
        row["brand_id"] = name
    v["alerts"] = [{**v["alerts"][0], "key": n} for n in names]
    v["milestones"] = [{**v["milestones"][0], "brand_id": n} for n in names]
    return v


@pytest.mark.parametrize("terminal", [False, True])
@pytest.mark.parametrize("screen", ["report", "top"])
def test_terminal_views_show_producer_strings_as_text(
    screen: str, terminal: bool
) -> None:
    """`presale report` and `presale top` print `[/]` and `[link=...]` as
    written (no MarkupError, no OSC 8 hyperlink) and an ESC or bidi override
    as its escape, never raw, even when Redis holds one from before."""
    renderable = (
        table(_report_with(NASTY)) if screen == "report" else frame(_view_with(NASTY))
    )
    text = _render(renderable, terminal)
    assert "[/]" in text
    assert "[link=https://example.invalid]x[/link]" in text
    assert "\x1b]8;" not in text  # no hyperlink
    assert "\\x1b[2J" in text and "\\u202e" in text
    assert "\x1b[2J" not in text and "\u202e" not in text
    if not terminal:
        assert "\x1b" not in text


def test_live_page_writes_text_never_html() -> None:
    """The live page puts every value in with textContent: no innerHTML,
    outerHTML, insertAdjacentHTML or document.write."""
    from streams.live import page_html

    page = page_html().decode()
    assert "textContent" in page
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in page, sink
