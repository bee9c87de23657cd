"""A second, throw-away Kafka broker with a SASL_PLAINTEXT (PLAIN) listener, on
free ports, from the same jars `deploy/local/services.sh` fetches. The shared
broker on 9092 is never touched."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.services import ROOT, free_port, stop_processes

VERSION = os.environ.get("PRESALE_KAFKA_VERSION", "4.3.1")
CACHE = Path(os.environ.get("PRESALE_CACHE_DIR", str(ROOT / ".cache")))
JARS = CACHE / f"kafka-jars-{VERSION}"
_READY_S = 120.0

CONFIG = """process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_PLAINTEXT
sasl.enabled.mechanisms=PLAIN
sasl.mechanism.inter.broker.protocol=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=\
org.apache.kafka.common.security.plain.PlainLoginModule required \
username="admin" password="{admin}" user_admin="{admin}" user_{user}="{password}";
log.dirs={data}
num.partitions=6
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
"""


def fetch_jars() -> None:
    """The broker's jars, as services.sh fetches them (a no-op once there; a
    worktree whose Kafka was already running may not have them yet)."""
    if (JARS / ".complete").exists():
        return
    tmp = JARS.with_name(f"{JARS.name}.tmp.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    done = subprocess.run(
        [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(ROOT / "deploy" / "local" / "pom.xml"),
            f"-Dkafka.version={VERSION}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        msg = f"mvn could not fetch the Kafka jars: {done.stdout[-1500:]}"
        raise AssertionError(msg)
    (tmp / ".complete").touch()
    if not JARS.exists():
        tmp.rename(JARS)
    else:  # another process was first
        shutil.rmtree(tmp, ignore_errors=True)


def _java(*args: str, log: Path | None = None) -> list[str]:
    return [
        "java",
        "-Xms128m",
        "-Xmx512m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        *([f"-Dlog4j2.configurationFile={log}"] if log else []),
        "-cp",
        f"{JARS}/*",
        *args,
    ]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def sasl_kafka(user: str, password: str) -> Iterator[int]:
    """A single-node KRaft broker whose only client listener wants SASL PLAIN
    from `user`/`password`; yields its port once it listens."""
    fetch_jars()
    port, controller = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="presale-sasl-") as tmp:
        work = Path(tmp)
        conf = work / "server.properties"
        conf.write_text(
            CONFIG.format(
                port=port,
                controller=controller,
                admin="admin-" + password,
                user=user,
                password=password,
                data=work / "data",
            )
        )
        log4j = work / "log4j2.properties"
        log4j.write_text(
            "status = warn\nappender.f.type = File\nappender.f.name = F\n"
            f"appender.f.fileName = {work / 'server.log'}\n"
            "appender.f.layout.type = PatternLayout\n"
            "appender.f.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = WARN\nrootLogger.appenderRef.f.ref = F\n"
        )
        formatted = subprocess.run(
            _java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                "cHJlc2FsZS1zYXNsLXRlc3Q",  # any 22-char base64 cluster id
                "-c",
                str(conf),
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if formatted.returncode != 0:
            msg = f"Kafka storage format failed: {formatted.stderr[-1500:]}"
            raise AssertionError(msg)
        out_path = work / "broker.out"
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                _java("kafka.Kafka", str(conf), log=log4j),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + _READY_S
            while not _listening(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = out_path.read_text(errors="replace")[-2000:]
                    msg = f"the SASL broker did not start: {tail}"
                    raise AssertionError(msg)
                time.sleep(0.5)
            yield port
        finally:
            stop_processes([proc], timeout=60)
