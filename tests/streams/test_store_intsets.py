"""The worker's advice on Redis's set-max-intset-entries (streams/store.py)."""

from __future__ import annotations

import pytest

from streams.store import intset_advice


@pytest.mark.parametrize(
    ("limit", "shards"),
    [(8192, 1024), (512, 16_384), (100_000, 80), (None, 1024), (None, 1)],
)
def test_no_advice_when_the_sets_stay_compact_or_the_limit_is_unknown(
    limit: int | None, shards: int
) -> None:
    assert intset_advice(limit, shards) is None


@pytest.mark.parametrize(
    ("limit", "shards", "ids", "enough"),
    [
        (512, 1024, "524,288", 8192),  # Redis's default with presale's default
        (128, 3000, "384,000", 4096),
        (8191, 976, "7,994,416", 16384),  # one short of 8M ids: the next power of two
    ],
)
def test_advice_names_the_limit_the_ids_and_a_setting_that_is_enough(
    limit: int, shards: int, ids: str, enough: int
) -> None:
    advice = intset_advice(limit, shards)
    assert advice is not None
    assert f"up to {limit:,} integers" in advice
    assert f"PRESALE_DEDUPE_SHARDS={shards}" in advice
    assert f"past {ids} ids a generation" in advice
    assert f"set-max-intset-entries to {enough} or more" in advice
    assert enough * shards >= 8_000_000 > (enough // 2) * shards
