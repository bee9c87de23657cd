"""Every private API of faust-streaming, mode, aiokafka and redis-py that the
worker uses, pinned by name and signature: an upgrade that moves one fails here,
with a message naming the package, the installed and the pinned version, and
where our code relies on it. Pure unit test: nothing is started.

The worker relies on them in streams/batching.py (the batch drain loop, the
consumer thread, the transport), streams/kafka.py, streams/outbox.py and
streams/record.py (metadata refresh) and streams/store.py (the apply step sent
straight on a pooled connection).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from functools import cache
from importlib import import_module, metadata
from pathlib import Path

import pytest

LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"


@cache
def pinned(package: str) -> str:
    found = re.search(
        rf"^{re.escape(package)}==([^\s\\]+)", LOCK.read_text(), re.MULTILINE
    )
    return found.group(1) if found else "not pinned"


def _upgrade(package: str, what: str, used_in: str, detail: str) -> str:
    return (
        f"{package} {metadata.version(package)} (pinned {pinned(package)} in "
        f"requirements.lock): {what} {detail}; an upgrade moved it. "
        f"{used_in} relies on it: adapt it, or keep {package} at {pinned(package)}."
    )


def _resolve(path: str) -> object:
    """`module:Class.attribute` -> the object."""
    module, _, attrs = path.partition(":")
    obj: object = import_module(module)
    for attr in attrs.split("."):
        obj = getattr(obj, attr)
    return obj


# (package, "module:Class.method", the parameters our code passes or overrides
# with, in order, and where we use it)
METHODS: list[tuple[str, str, list[str], str]] = [
    (
        "faust-streaming",
        "faust.transport.drivers.aiokafka:Consumer._drain_messages",
        ["self", "fetcher"],
        "streams/batching.py BatchConsumer._drain_messages (an override)",
    ),
    (
        "faust-streaming",
        "faust.transport.drivers.aiokafka:Consumer._wait_next_records",
        ["self", "timeout"],
        "streams/batching.py BatchConsumer._drain_messages",
    ),
    (
        "faust-streaming",
        "faust.transport.drivers.aiokafka:Consumer._new_consumer_thread",
        ["self"],
        "streams/batching.py BatchConsumer._new_consumer_thread (an override)",
    ),
    (
        "faust-streaming",
        "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread"
        "._create_worker_consumer",
        ["self", "transport"],
        "streams/batching.py BatchConsumerThread._create_worker_consumer",
    ),
    (
        "faust-streaming",
        "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread.seek_to_beginning",
        ["self", "*partitions"],
        "streams/batching.py BatchConsumer.perform_seek (through Consumer._thread)",
    ),
    (
        "faust-streaming",
        "faust.transport.drivers.aiokafka:Consumer.seek_wait",
        ["self", "partitions"],
        "streams/batching.py BatchConsumer._seek_owned",
    ),
    (
        "faust-streaming",
        "faust:App._new_transport",
        ["self"],
        "streams/batching.py BatchApp._new_transport (an override)",
    ),
    (
        "aiokafka",
        "aiokafka.client:AIOKafkaClient.force_metadata_update",
        ["self"],
        "streams/kafka.py, streams/outbox.py and streams/record.py "
        "(consumer._client.force_metadata_update())",
    ),
    (
        "aiokafka",
        "aiokafka.client:AIOKafkaClient.fetch_all_metadata",
        ["self"],
        "streams/outbox.py (producer.client.fetch_all_metadata())",
    ),
    (
        "redis",
        "redis.asyncio.connection:ConnectionPool.get_connection",
        ["self", "command_name", "*keys", "**options"],
        "streams/store.py RedisStore.send (pool.get_connection())",
    ),
    (
        "redis",
        "redis.asyncio.connection:ConnectionPool.release",
        ["self", "connection"],
        "streams/store.py RedisStore.send and _reply (pool.release(conn))",
    ),
    (
        "redis",
        "redis.asyncio.connection:AbstractConnection.send_command",
        ["self", "*args", "**kwargs"],
        "streams/store.py RedisStore.send (conn.send_command)",
    ),
    (
        "redis",
        "redis.asyncio.connection:AbstractConnection.read_response",
        ["self", "disable_decoding", "timeout", "disconnect_on_error", "push_request"],
        "streams/store.py RedisStore._reply (conn.read_response())",
    ),
    (
        "redis",
        "redis.asyncio.connection:AbstractConnection.disconnect",
        ["self", "nowait", "error", "failure_count", "health_check_failed"],
        "streams/store.py RedisStore._reply (conn.disconnect(nowait=True))",
    ),
]

# Attributes set on instances (no instance is made here: their constructors,
# or the methods that read them, must still assign or read them).
# (package, "module:Class.method" whose source holds it, the text, where used)
ATTRIBUTES: list[tuple[str, str, str, str]] = [
    (
        "aiokafka",
        "aiokafka:AIOKafkaConsumer.__init__",
        "self._client = AIOKafkaClient(",
        "streams/kafka.py, streams/outbox.py, streams/record.py (consumer._client)",
    ),
    (
        "aiokafka",
        "aiokafka:AIOKafkaConsumer.__init__",
        "self._fetch_max_wait_ms = fetch_max_wait_ms",
        "streams/batching.py BatchConsumerThread (consumer._fetch_max_wait_ms)",
    ),
    (
        "aiokafka",
        "aiokafka:AIOKafkaConsumer.start",
        "fetch_max_wait_ms=self._fetch_max_wait_ms",
        "streams/batching.py BatchConsumerThread (set before start() reads it)",
    ),
    (
        "aiokafka",
        "aiokafka:AIOKafkaProducer.__init__",
        "self.client = AIOKafkaClient(",
        "streams/outbox.py (producer.client)",
    ),
    (
        "mode-streaming",
        "mode:Service.__init__",
        "self._stopped = ",
        "streams/batching.py BatchConsumer._drain_messages (self._stopped, "
        "fetcher._stopped)",
    ),
    (
        "faust-streaming",
        "faust.transport.consumer:ThreadDelegateConsumer.__init__",
        "self._thread = ",
        "streams/batching.py BatchConsumer.perform_seek (self._thread)",
    ),
    (
        "redis",
        "redis.asyncio.connection:AbstractConnection.__init__",
        "self._writer",
        "streams/store.py RedisStore.send (conn._writer's write buffer limits)",
    ),
]


def _parameters(func: Callable[..., object]) -> list[str]:
    marks = {
        inspect.Parameter.VAR_POSITIONAL: "*",
        inspect.Parameter.VAR_KEYWORD: "**",
    }
    return [
        marks.get(p.kind, "") + p.name
        for p in inspect.signature(func).parameters.values()
    ]


@pytest.mark.parametrize(
    ("package", "path", "parameters", "used_in"),
    METHODS,
    ids=[m[1].partition(":")[2] for m in METHODS],
)
def test_private_method(
    package: str, path: str, parameters: list[str], used_in: str
) -> None:
    try:
        func = _resolve(path)
    except AttributeError:
        pytest.fail(_upgrade(package, path, used_in, "is gone"))
    assert callable(func)
    got = _parameters(func)
    assert got == parameters, _upgrade(
        package,
        path,
        used_in,
        f"takes ({', '.join(got)}), not ({', '.join(parameters)})",
    )


@pytest.mark.parametrize(
    ("package", "path", "text", "used_in"),
    ATTRIBUTES,
    ids=[a[2].split("=")[0].strip() for a in ATTRIBUTES],
)
def test_private_attribute(package: str, path: str, text: str, used_in: str) -> None:
    try:
        source = inspect.getsource(_resolve(path))  # type: ignore[arg-type]
    except AttributeError:
        pytest.fail(_upgrade(package, path, used_in, "is gone"))
    assert text in source, _upgrade(
        package, path, used_in, f"no longer holds `{text.strip()}`"
    )


def test_the_consumer_stops_on_aiokafka_errors() -> None:
    """BatchConsumer._drain_messages ends quietly on these, as Faust's does."""
    from aiokafka.errors import ConsumerStoppedError
    from faust.transport.drivers.aiokafka import Consumer

    assert ConsumerStoppedError in Consumer.consumer_stopped_errors, _upgrade(
        "faust-streaming",
        "Consumer.consumer_stopped_errors",
        "streams/batching.py BatchConsumer._drain_messages",
        "no longer holds ConsumerStoppedError",
    )


def test_the_versions_are_the_pinned_ones() -> None:
    """The pins these checks were written against; a new pin re-checks them."""
    for package in ("faust-streaming", "mode-streaming", "aiokafka", "redis"):
        assert metadata.version(package) == pinned(package), _upgrade(
            package,
            "the installed version",
            "every private API above",
            "differs from the lock",
        )


def test_the_message_names_the_upgrade() -> None:
    msg = _upgrade("aiokafka", "X.y", "streams/z.py", "is gone")
    installed, pin = metadata.version("aiokafka"), pinned("aiokafka")
    assert msg.startswith(f"aiokafka {installed} (pinned {pin} in requirements.lock)")
    assert "X.y is gone; an upgrade moved it" in msg and "streams/z.py" in msg
