"""How every client connects: Redis (one server or a Cluster, AUTH, TLS) and Kafka
(SASL PLAIN/SCRAM, TLS), from the settings alone."""

from __future__ import annotations

import ssl
from typing import Any

import faust
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from streams.settings import Settings

# Both kinds of Redis client answer the same commands the store and outbox use.
RedisClient = aioredis.Redis | RedisCluster


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
        return RedisCluster.from_url(settings.redis_url, **options)
    return aioredis.Redis.from_url(
        settings.redis_url, health_check_interval=30, **options
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
