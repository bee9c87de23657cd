"""The production settings (Redis Cluster, Redis AUTH/TLS, Kafka SASL/TLS, the
metrics address) and the clients built from them; no services needed."""

from __future__ import annotations

import ssl

import faust
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from streams.connect import faust_credentials, kafka_auth, redis_client
from streams.errors import SettingsError
from streams.settings import Settings, mask_url


def test_defaults_are_plaintext_loopback() -> None:
    s = Settings.from_env({}, load=False)
    assert s.kafka_security_protocol == "PLAINTEXT"
    assert not s.redis_cluster
    assert (s.web_host, s.metrics_host) == ("127.0.0.1", "127.0.0.1")
    assert kafka_auth(s) == {"security_protocol": "PLAINTEXT", "ssl_context": None}
    assert faust_credentials(s) is None


def test_metrics_host_follows_web_host_unless_set() -> None:
    s = Settings.from_env({"PRESALE_WEB_HOST": "0.0.0.0"}, load=False)
    assert s.metrics_host == "0.0.0.0"
    s = Settings.from_env(
        {"PRESALE_WEB_HOST": "0.0.0.0", "PRESALE_METRICS_HOST": "10.1.2.3"}, load=False
    )
    assert (s.web_host, s.metrics_host) == ("0.0.0.0", "10.1.2.3")


def test_repr_masks_every_secret() -> None:
    env = {
        "PRESALE_REDIS_URL": "redis://app:url-secret-1@h:6379/0",
        "PRESALE_REDIS_USERNAME": "app",
        "PRESALE_REDIS_PASSWORD": "redis-secret-2",
        "PRESALE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "PRESALE_KAFKA_SASL_USERNAME": "svc",
        "PRESALE_KAFKA_SASL_PASSWORD": "kafka-secret-3",
    }
    s = Settings.from_env(env, load=False)
    for text in (repr(s), str(s), f"{s}"):
        for secret in ("url-secret-1", "redis-secret-2", "kafka-secret-3"):
            assert secret not in text
        assert "redis://app:***@h:6379/0" in text
        assert "kafka_sasl_username='svc'" in text
    assert s.redis_password == "redis-secret-2"
    assert s.kafka_sasl_password == "kafka-secret-3"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:p@h:1/0", "redis://:***@h:1/0"),
        ("rediss://u:p%40ss@h:1/0", "rediss://u:***@h:1/0"),
        # issue 16: redis-py reads `password` from the query too (missed before)
        ("redis://h:1/0?password=s3cret", "redis://h:1/0?password=***"),
        ("redis://h/0?db=1&PASSWORD=s3&x=1", "redis://h/0?db=1&PASSWORD=***&x=1"),
        ("redis://u:a@h/0?password=b#f", "redis://u:***@h/0?password=***#f"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_sasl_settings_reach_aiokafka_and_faust() -> None:
    env = {
        "PRESALE_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
        "PRESALE_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "PRESALE_KAFKA_SASL_USERNAME": "svc",
        "PRESALE_KAFKA_SASL_PASSWORD": "pw",
    }
    s = Settings.from_env(env, load=False)
    assert kafka_auth(s) == {
        "security_protocol": "SASL_PLAINTEXT",
        "ssl_context": None,
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "pw",
    }
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_PLAINTEXT"
    assert creds.mechanism.value == "SCRAM-SHA-512"
    assert (creds.username, creds.password) == ("svc", "pw")


def test_tls_gives_a_context() -> None:
    s = Settings.from_env({"PRESALE_KAFKA_SECURITY_PROTOCOL": "SSL"}, load=False)
    options = kafka_auth(s)
    assert options["security_protocol"] == "SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert isinstance(faust_credentials(s), faust.SSLCredentials)
    s = Settings.from_env(
        {
            "PRESALE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "PRESALE_KAFKA_SASL_USERNAME": "u",
            "PRESALE_KAFKA_SASL_PASSWORD": "p",
        },
        load=False,
    )
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == "SASL_SSL"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PRESALE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "PRESALE_KAFKA_SECURITY_PROTOCOL"),
        (
            {
                "PRESALE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "PRESALE_KAFKA_SASL_MECHANISM": "GSSAPI",
            },
            "PRESALE_KAFKA_SASL_MECHANISM",
        ),
        (
            {"PRESALE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
            "PRESALE_KAFKA_SASL_USERNAME",
        ),
        ({"PRESALE_REDIS_CLUSTER": "maybe"}, "PRESALE_REDIS_CLUSTER"),
        (
            {"PRESALE_REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"},
            "PRESALE_REDIS_TLS_CA_FILE",
        ),
        ({"PRESALE_KAFKA_TLS_CERT_FILE": __file__}, "PRESALE_KAFKA_TLS_KEY_FILE"),
    ],
)
def test_bad_security_settings_name_the_variable(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(env, load=False)


@pytest.mark.parametrize(
    ("raw", "cluster"), [("1", True), ("true", True), ("0", False)]
)
def test_redis_client_kind(raw: str, cluster: bool) -> None:
    s = Settings.from_env(
        {
            "PRESALE_REDIS_CLUSTER": raw,
            "PRESALE_REDIS_USERNAME": "app",
            "PRESALE_REDIS_PASSWORD": "pw",
        },
        load=False,
    )
    client = redis_client(s)
    assert isinstance(client, RedisCluster if cluster else aioredis.Redis)
    if not cluster:
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["username"], kwargs["password"]) == ("app", "pw")
