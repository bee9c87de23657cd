"""Extra real Redis servers for tests, on free ports: a plain one, one that
requires AUTH (an ACL user) and a 3-master Redis Cluster. Started from Debian's
`redis-server` by a fixture and stopped after it (bench/redis_servers.py starts
them, for `make bench-scale` too); the shared Redis on 6379 is never touched."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bench.redis_servers import keys_by_node, redis_cluster, redis_server

__all__ = ["acl_redis", "keys_by_node", "plain_redis", "redis_cluster"]


@contextmanager
def plain_redis() -> Iterator[int]:
    """A throwaway Redis of our own (no persistence) on a free port; yields the
    port. The unit tests of the atomic step run the real Lua script in it."""
    with redis_server(
        "--set-max-intset-entries", "8192", prefix="presale-step-"
    ) as port:
        yield port


@contextmanager
def acl_redis(user: str, password: str) -> Iterator[int]:
    """A Redis whose default user is off: only `user` with `password` gets in.
    Yields its port."""
    with redis_server(
        "--user",
        "default",
        "off",
        "--user",
        user,
        "on",
        f">{password}",
        "~*",
        "&*",
        "+@all",
        auth=(user, password),
        prefix="presale-acl-",
    ) as port:
        yield port
