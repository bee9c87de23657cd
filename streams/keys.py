"""Where a campaign's state lives in Redis: every key name, in one place.

A campaign's state is split into `PRESALE_STATE_SHARDS` shards. Each shard's
keys share one hash tag, so a shard's atomic step (lua/apply.lua) runs on one
Redis Cluster master, and the shards' tags are picked so their slots spread
evenly over the slot space: a cluster of M masters (slots split evenly, as
`redis-cli --cluster create` does) holds S / M shards each when M divides S.
The campaign's own tag holds what is decided campaign-wide (lua/fold.lua): the
first-hour GMV milestones are decided on, the leaderboard rank, the brands,
the milestones, the outbox, the alerts, the lease and the pinned rules.

With one shard (the default on one Redis) the shard's prefix is the campaign's:
every key sits under `presale:{<campaign>}:`, as before shards existed.

In a shard (after its prefix): `off` (partition -> last offset applied),
`meta` (watermark_ms, out_of_window, late, fold_seq), `wm` (watermark samples),
`dd:<generation>:<set>`, `dd:o:<set>`, `dd:gens` (dedupe ids), `bc:<brand>`,
`ch` ("<channel>:<counter>"), `u:bc:<brand>:<channel>`, `u:ch:<channel>`,
`u:rg:<region>` (buyers), `rg`, `fhc`, `mn` (regions, first hour by channel,
minutes), `dl` (dead letters), `sm:<minute>`, `sm:idx` (surge traffic),
`clock`, `clock:part` (surge clocks of the partitions it is home to), `agg`
(its batch aggregates until folded).

In the campaign's slot: `folded` (shard -> last aggregate folded), `fh`
(first-hour gross GMV), `rank`, `brands`, `rooms`, `rgs` (regions admitted),
`ms`, `outbox`, `alerts`, `meta` (surge_through), `outbox:lease`,
`outbox:epoch`, `run`, `rules`. docs/architecture.md has the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Final

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

SLOTS: Final = REDIS_CLUSTER_HASH_SLOTS


def campaign_prefix(campaign_id: str) -> str:
    """The campaign-wide keys' prefix: one hash tag per campaign."""
    return f"presale:{{{campaign_id}}}:"


def shard_tag(tag: str, shard: int, shards: int) -> str:
    """The hash tag of a shard: `<tag>:<shard>:<salt>`, the first salt whose
    slot falls in the shard's even share of the slot space (a few tries). A
    campaign id holds no `:` (Settings), so no campaign's tag is another's."""
    low = shard * SLOTS // shards
    high = (shard + 1) * SLOTS // shards
    salt = 0
    while True:
        candidate = f"{tag}:{shard}:{salt}"
        if low <= key_slot(candidate.encode()) < high:
            return candidate
        salt += 1


def _split(prefix: str) -> tuple[str, str, str]:
    """A prefix's text before its hash tag, the tag, the text after."""
    head, brace, rest = prefix.partition("{")
    tag, close, tail = rest.partition("}")
    if not brace or not close or not tag:
        msg = f"a campaign's key prefix needs a hash tag, got {prefix!r}"
        raise ValueError(msg)
    return head, tag, tail


@dataclass(frozen=True)
class Layout:
    """A campaign's key prefixes: the campaign's (`presale:{<campaign>}:`, or
    any prefix with one hash tag) and its shards'."""

    campaign: str
    shards: int = 1

    @cached_property
    def shard(self) -> tuple[str, ...]:
        """Each shard's key prefix; with one shard, the campaign's own."""
        if self.shards == 1:
            return (self.campaign,)
        head, tag, tail = _split(self.campaign)
        return tuple(
            f"{head}{{{shard_tag(tag, s, self.shards)}}}{tail}"
            for s in range(self.shards)
        )

    def each(self, name: str) -> list[str]:
        """The key `name` in every shard."""
        return [p + name for p in self.shard]

    @property
    def scan_prefixes(self) -> list[str]:
        """Plain prefixes that together cover every key of the campaign
        (`presale reset`): the campaign's, and its shards' `head{tag:`."""
        if self.shards == 1:
            return [self.campaign]
        head, tag, _tail = _split(self.campaign)
        return [self.campaign, f"{head}{{{tag}:"]
