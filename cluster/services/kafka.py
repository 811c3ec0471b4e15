"""A real Apache Kafka broker on 127.0.0.1: KRaft mode, one combined broker+controller.

The jars come from Maven Central through the raybus cache (see ``kafka_dist``); each
start formats fresh storage with a new cluster id in a scratch directory, binds two free
loopback ports (client and controller listeners), caps the heap and sizes everything for
one node on a small machine. "Ready" means a real client created a topic and
round-tripped a message through it, not merely that the port is open.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import shutil
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, for_code

from cluster.services.base import Launch, LocalService
from cluster.services.errors import ServiceError
from cluster.services.kafka_dist import KAFKA_VERSION, KafkaDistribution, fetch_distribution
from cluster.services.process import LOOPBACK, free_port, port_accepts
from cluster.services.state import ServiceName

__all__ = [
    "DEFAULT_JVM_OPTIONS",
    "KAFKA_BOOTSTRAP_ENV",
    "KafkaService",
    "kafka_round_trip",
    "new_cluster_id",
    "render_properties",
    "server_properties",
]

logger = logging.getLogger(__name__)

KAFKA_BOOTSTRAP_ENV = "RAYBUS_KAFKA_BOOTSTRAP"
_SERVICE = "kafka"
_MAIN = "kafka.Kafka"
_STORAGE_TOOL = "kafka.tools.StorageTool"
_FORMAT_TIMEOUT_S = 120.0
_CLEANUP_TIMEOUT_S = 5.0
_READY_GROUP = "raybus-ready"

# Serial GC and a small initial heap keep the footprint low on a 2-core machine; the
# broker's working set here is tiny, so G1's concurrent threads buy nothing. C1-only JIT
# (TieredStopAtLevel=1) measured ~25% faster to ready and ~30 MiB smaller, at the cost of
# peak throughput: pass full-JIT ``jvm_options`` for broker benchmarks.
DEFAULT_JVM_OPTIONS: tuple[str, ...] = (
    "-Xms64m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

_LOG4J2_PROPERTIES = """\
# The broker's log goes to stdout, which raybus appends to the service log file.
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
# Full config dumps would push the interesting lines out of the log tail.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""


def new_cluster_id() -> str:
    """A fresh KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Kafka's own ``Uuid.randomUuid`` also rejects ids starting with ``-`` (they would read
    as command-line options), so this does too.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not cluster_id.startswith("-"):
            return cluster_id


def server_properties(
    *,
    broker_port: int,
    controller_port: int,
    log_dir: Path,
    host: str = LOOPBACK,
    more_listeners: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """The broker configuration for one combined broker+controller node on ``host``.

    ``more_listeners`` adds client listeners named after their security protocol
    (``{"SASL_SSL": port}``); their TLS and SASL settings are the caller's to add.
    """
    clients = {"PLAINTEXT": broker_port, **(more_listeners or {})}
    client_listeners = ",".join(f"{name}://{host}:{port}" for name, port in clients.items())
    protocols = ",".join(f"{name}:{name}" for name in clients)
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"{client_listeners},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": client_listeners,
        "listener.security.protocol.map": f"{protocols},CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dir),
        # Topics are created explicitly, so a typo fails instead of creating a topic.
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
        # One node: every replication factor and ISR is 1.
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Internal topics default to 50 partitions; creating them would stall the first
        # consumer group join or transaction for seconds.
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Small machine: few threads, and a 16 MiB (not 128 MiB) log-cleaner buffer so
        # the capped heap is not mostly one idle buffer.
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "background.threads": "2",
        "log.cleaner.threads": "1",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
    }


def render_properties(properties: Mapping[str, str]) -> str:
    """Java ``.properties`` text; backslashes in values are escaped as Java requires."""
    return "".join(
        f"{key}={value.replace(chr(92), chr(92) * 2)}\n" for key, value in properties.items()
    )


def _raise_for_codes(entries: Iterable[Any], what: str) -> None:
    """Raise the aiokafka error for the first non-zero error code in a response array."""
    for entry in entries:
        name, code = entry[0], entry[1]
        if code:
            raise for_code(code)(f"{what} {name}")


async def _close_quietly(close: Callable[[], Awaitable[Any]]) -> None:
    # Cleanup after a failed round trip must neither hang nor mask the first error.
    try:
        async with asyncio.timeout(_CLEANUP_TIMEOUT_S):
            await close()
    except (KafkaError, OSError, TimeoutError) as exc:
        logger.debug("closing a Kafka client failed: %r", exc)


async def kafka_round_trip(bootstrap: str, *, timeout_s: float = 10.0) -> None:
    """Create a topic, produce one message, consume and commit it, delete the topic.

    Raises:
        ServiceError: any step failed or the whole did not finish within ``timeout_s``.
    """
    topic = f"raybus-ready-{uuid.uuid4().hex[:12]}"
    payload = topic.encode("ascii")
    request_timeout_ms = int(timeout_s * 1000)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=request_timeout_ms)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=request_timeout_ms)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=_READY_GROUP,  # one shared name, so probes do not pile up empty groups
        request_timeout_ms=request_timeout_ms,
        enable_auto_commit=False,
    )
    async with contextlib.AsyncExitStack() as cleanup:
        for client_close in (admin.close, producer.stop, consumer.stop):
            cleanup.push_async_callback(_close_quietly, client_close)
        try:
            async with asyncio.timeout(timeout_s):
                await admin.start()
                created = await admin.create_topics([NewTopic(topic, 1, 1)])
                _raise_for_codes(created.topic_errors, "create topic")
                await producer.start()
                await producer.send_and_wait(topic, payload)
                await consumer.start()
                partition = TopicPartition(topic, 0)
                consumer.assign([partition])
                await consumer.seek_to_beginning(partition)
                record = await consumer.getone()
                if record.value != payload:
                    raise ServiceError(_SERVICE, f"read back {record.value!r}, sent {payload!r}")
                # Committing makes the broker create its offsets topic and elect a group
                # coordinator now, so "ready" includes consumer groups (the Kafka backend
                # commits after every response).
                await consumer.commit()
                deleted = await admin.delete_topics([topic])
                _raise_for_codes(deleted.topic_error_codes, "delete topic")
        except (KafkaError, OSError, TimeoutError) as exc:
            raise ServiceError(_SERVICE, f"round trip through {bootstrap} failed: {exc!r}") from exc


def _split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


class KafkaService(LocalService):
    """An Apache Kafka broker (KRaft, broker+controller in one JVM) on 127.0.0.1.

    Args:
        cache_dir: where the Kafka jars are cached (fetched on first use).
        version: the Kafka version to run.
        heap_max_mb: the JVM's ``-Xmx``.
        jvm_options: further JVM flags (GC, JIT); the default suits a small machine.
        ready_timeout_s: how long :meth:`start` waits for the first round trip
            (fetching the jars is bounded separately by ``fetch_timeout_s``).
        fetch_timeout_s: bound on the one-time Maven download.
        java: the ``java`` executable; by default the one on ``PATH``.
        mvn: the ``mvn`` executable; by default the one on ``PATH``.
    """

    name = ServiceName.KAFKA
    env_var = KAFKA_BOOTSTRAP_ENV

    def __init__(
        self,
        cache_dir: Path,
        *,
        version: str = KAFKA_VERSION,
        heap_max_mb: int = 512,
        jvm_options: Sequence[str] = DEFAULT_JVM_OPTIONS,
        ready_timeout_s: float = 120.0,
        fetch_timeout_s: float = 900.0,
        java: str | None = None,
        mvn: str | None = None,
    ) -> None:
        super().__init__(ready_timeout_s=ready_timeout_s)
        self._cache_dir = cache_dir
        self._version = version
        self._heap_max_mb = heap_max_mb
        self._jvm_options = tuple(jvm_options)
        self._fetch_timeout_s = fetch_timeout_s
        self._java = java
        self._mvn = mvn
        self._distribution: KafkaDistribution | None = None
        self.listener_ports: dict[str, int] = {}
        """Ports of the client listeners beside PLAINTEXT, by security protocol."""

    @property
    def bootstrap(self) -> str:
        """``host:port`` of the client listener (the same as :attr:`endpoint`)."""
        return self.endpoint

    @classmethod
    async def probe(cls, endpoint: str, *, timeout_s: float) -> bool:
        """Whether a broker at ``endpoint`` completes a topic round trip within a bound."""
        host, port = _split_endpoint(endpoint)
        # A cheap TCP check first: aiokafka logs every refused bootstrap at ERROR level.
        if not await port_accepts(host, port, timeout_s=min(timeout_s, 1.0)):
            return False
        try:
            await kafka_round_trip(endpoint, timeout_s=timeout_s)
        except ServiceError as exc:
            logger.debug("kafka at %s does not answer yet: %s", endpoint, exc)
            return False
        return True

    async def _prepare(self) -> None:
        java = self._java or shutil.which("java")
        if java is None:
            raise ServiceError(_SERVICE, f"`java` is not on PATH; Kafka {self._version} needs 17+")
        self._java = java
        self._distribution = await fetch_distribution(
            self._cache_dir, self._version, mvn=self._mvn, timeout_s=self._fetch_timeout_s
        )

    def _more_listeners(self) -> tuple[str, ...]:
        """Client listeners beside PLAINTEXT, by security protocol (a subclass's hook)."""
        return ()

    def _listener_properties(self, ports: Mapping[str, int]) -> dict[str, str]:
        """Broker properties for :meth:`_more_listeners` on ``ports`` (a subclass's hook)."""
        return {}

    def _format_options(self) -> tuple[str, ...]:
        """Further ``kafka-storage format`` options, e.g. SCRAM users (a subclass's hook)."""
        return ()

    async def _launch(self, run_dir: Path, log_path: Path) -> Launch:
        assert self._java is not None
        assert self._distribution is not None
        data_dir = run_dir / "data"
        names = ("PLAINTEXT", "CONTROLLER", *self._more_listeners())
        ports: dict[str, int] = {}
        while len(set(ports.values())) < len(names):
            ports = {name: free_port() for name in names}
        broker_port, controller_port = ports.pop("PLAINTEXT"), ports.pop("CONTROLLER")
        properties = server_properties(
            broker_port=broker_port,
            controller_port=controller_port,
            log_dir=data_dir,
            more_listeners=ports,
        )
        config = run_dir / "server.properties"
        config.write_text(
            render_properties(properties | self._listener_properties(ports)), encoding="utf-8"
        )
        self.listener_ports = ports
        log4j = run_dir / "log4j2.properties"
        log4j.write_text(_LOG4J2_PROPERTIES, encoding="utf-8")
        java_prefix = (
            self._java,
            *self._jvm_options,
            f"-Xmx{self._heap_max_mb}m",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            self._distribution.classpath,
        )
        await self._format(
            (
                *java_prefix,
                _STORAGE_TOOL,
                "format",
                "-t",
                new_cluster_id(),
                "-c",
                str(config),
                *self._format_options(),
            ),
            run_dir,
            log_path,
        )
        return Launch(
            argv=(*java_prefix, _MAIN, str(config)),
            endpoint=f"{LOOPBACK}:{broker_port}",
        )

    async def _format(self, argv: tuple[str, ...], run_dir: Path, log_path: Path) -> None:
        """Run the storage tool, its output going to the service log too."""
        with log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=run_dir, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
            try:
                async with asyncio.timeout(_FORMAT_TIMEOUT_S):
                    code = await proc.wait()
            except TimeoutError as exc:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise ServiceError(
                    _SERVICE,
                    f"formatting storage took over {_FORMAT_TIMEOUT_S:g} s",
                    self.log_tail(),
                ) from exc
        if code != 0:
            raise ServiceError(
                _SERVICE, f"formatting storage failed with exit code {code}", self.log_tail()
            )
