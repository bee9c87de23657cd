"""How every client connects: Redis (one server or a Cluster, AUTH, TLS) and Kafka
(SASL PLAIN/SCRAM, TLS), from the settings alone."""

from __future__ import annotations

import ssl
from typing import Any, TypeVar

import faust
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from streams.settings import Settings

# Both kinds of Redis client answer the same commands the store and outbox use.
RedisClient = aioredis.Redis | RedisCluster


class _ClosedUnderUs:
    """A connection closed by another task while this one writes or reads on
    it fails with ConnectionError, which every caller retries.

    redis-py 8.1.0 lets such a write or read fail with AttributeError or
    TypeError ('NoneType' object has no attribute 'writelines'): the shared
    client is used by concurrent tasks (the step's shards, the fold, the lag
    timer, the outbox, the surge judge), and on a CLUSTERDOWN answer the
    Cluster client closes every connection, in use or not. Fixed upstream
    (redis-py issue 4287), not in a release yet. Inside these two calls the
    only objects touched are the transport's, so those two errors mean the
    connection is gone; anything else passes unchanged.
    """

    async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().send_packed_command(*args, **kwargs)  # type: ignore[misc]
        except (AttributeError, TypeError) as exc:
            msg = f"the connection was closed while a command was sent ({exc})"
            raise RedisConnectionError(msg) from exc

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except (AttributeError, TypeError) as exc:
            msg = f"the connection was closed while an answer was read ({exc})"
            raise RedisConnectionError(msg) from exc


class GuardedConnection(_ClosedUnderUs, Connection):
    """A TCP connection, closed under us as ConnectionError."""


class GuardedSSLConnection(_ClosedUnderUs, SSLConnection):
    """A TLS connection, closed under us as ConnectionError."""


class GuardedUnixConnection(_ClosedUnderUs, UnixDomainSocketConnection):
    """A Unix socket connection, closed under us as ConnectionError."""


C = TypeVar("C", aioredis.Redis, RedisCluster)

# The class a client chose from its URL -> the same, guarded.
_GUARDED: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: GuardedConnection,
    SSLConnection: GuardedSSLConnection,
    UnixDomainSocketConnection: GuardedUnixConnection,
}


def guard(client: C) -> C:
    """`client`, every connection it opens from now on of the guarded kind of
    the class it chose from its URL (TCP, TLS or a Unix socket). Both kinds of
    client open connections lazily, from a class they keep: one Redis in its
    pool, a Cluster in the options its nodes are made from (one dict, shared
    by the client and its node manager) and in the nodes made so far. The
    Cluster's constructor takes no connection class, so it is swapped there
    (tests/integration/test_redis_closed_under_us.py checks every connection
    a real Cluster's client opened)."""
    if isinstance(client, RedisCluster):
        options = client.nodes_manager.connection_kwargs
        guarded = _GUARDED[options.get("connection_class", Connection)]
        assert issubclass(guarded, Connection)  # a Cluster speaks TCP or TLS
        options["connection_class"] = guarded
        for node in client.startup_nodes:
            node.connection_class = guarded
    else:
        pool = client.connection_pool
        pool.connection_class = _GUARDED[pool.connection_class]
    return client


def redis_client(settings: Settings) -> RedisClient:
    """A Redis client, or a Redis Cluster client when PRESALE_REDIS_CLUSTER is set
    (the URL then names any node; the others are discovered)."""
    options: dict[str, Any] = {
        "socket_connect_timeout": 5,
        "socket_timeout": 30,
    }
    if settings.redis_username:
        options["username"] = settings.redis_username
    if settings.redis_password:
        options["password"] = settings.redis_password
    if settings.redis_tls_ca_file:
        options["ssl_ca_certs"] = settings.redis_tls_ca_file
    if settings.redis_cluster:
        return guard(RedisCluster.from_url(settings.redis_url, **options))
    return guard(
        aioredis.Redis.from_url(settings.redis_url, health_check_interval=30, **options)
    )


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the Kafka clients; None for PLAINTEXT and SASL_PLAINTEXT."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(cafile=settings.kafka_tls_ca_file)
    if settings.kafka_tls_cert_file and settings.kafka_tls_key_file:
        context.load_cert_chain(
            settings.kafka_tls_cert_file, settings.kafka_tls_key_file
        )
    return context


def kafka_auth(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments for every producer, consumer and admin client."""
    options: dict[str, Any] = {
        "security_protocol": settings.kafka_security_protocol,
        "ssl_context": kafka_ssl_context(settings),
    }
    if settings.kafka_security_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    return options


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """The same, as Faust's `broker_credentials` (its consumer, producer, admin)."""
    context = kafka_ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
