"""Kafka administration for raybus: topic names, topic creation, consumer-group lag.

Also the one place aiokafka exceptions become ours (:func:`translate_kafka_error`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    ConsumerStoppedError,
    IllegalOperation,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    for_code,
)

from transports.errors import BusError, BusTimeout, ConnectionClosed, TransportError
from transports.kafka.security import KafkaSecurity, describe_failure

__all__ = [
    "KAFKA_ERRORS",
    "KafkaLagReader",
    "TopicNames",
    "connection_problem",
    "consumer_group_lag",
    "ensure_topics",
    "explain_kafka_error",
    "translate_kafka_error",
]

logger = logging.getLogger(__name__)

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_ADMIN_TIMEOUT_S = 30.0
_DIAGNOSIS_TIMEOUT_S = 10.0
_PLAINTEXT = KafkaSecurity()
# A lag reader describes a topic again after this long even when no query failed, so
# partitions added to it are counted.
_PARTITIONS_MAX_AGE_S = 60.0


@dataclass(frozen=True, slots=True)
class TopicNames:
    """DESIGN's topic layout under a configurable prefix (e.g. ``"prod."``).

    ``mcp.requests.global``, ``mcp.requests.<capability>``, ``mcp.requests.<server-id>``,
    ``mcp.responses.<client-id>``, ``mcp.server.discovery`` and ``mcp.dlq``. Names must
    be legal Kafka topic names; a pool or server named ``global`` is refused because it
    would share the global request topic.
    """

    prefix: str = ""

    def __post_init__(self) -> None:
        if self.prefix and not _TOPIC_NAME.fullmatch(self.prefix):
            raise ValueError(f"topic prefix {self.prefix!r} has characters Kafka refuses")

    def _name(self, *parts: str) -> str:
        name = self.prefix + ".".join(parts)
        if not _TOPIC_NAME.fullmatch(name) or name in {".", ".."}:
            raise ValueError(f"{name!r} is not a legal Kafka topic name ([A-Za-z0-9._-]{{1,249}})")
        return name

    def requests_global(self) -> str:
        return self._name("mcp", "requests", "global")

    def requests_for_capability(self, pool: str) -> str:
        if pool == "global":
            raise ValueError("a pool named 'global' would share the global request topic")
        return self._name("mcp", "requests", pool)

    def requests_for_server(self, server_id: str) -> str:
        if server_id == "global":
            raise ValueError("a server named 'global' would share the global request topic")
        return self._name("mcp", "requests", server_id)

    def responses_for_client(self, client_id: str) -> str:
        return self._name("mcp", "responses", client_id)

    def discovery_topic(self) -> str:
        return self._name("mcp", "server", "discovery")

    def dlq_topic(self) -> str:
        return self._name("mcp", "dlq")


def translate_kafka_error(exc: BaseException, operation: str, timeout_s: float = 0.0) -> BusError:
    """Our error for an aiokafka one (callers raise it ``from exc``)."""
    if isinstance(exc, KafkaTimeoutError | RequestTimedOutError | TimeoutError):
        return BusTimeout(f"kafka {operation}", timeout_s)
    if isinstance(exc, ConsumerStoppedError):
        return ConnectionClosed(f"kafka {operation}: the consumer is stopped")
    if isinstance(exc, KafkaError) and exc.retriable:
        return ConnectionClosed(f"kafka {operation} failed: {exc!r}")
    return TransportError(f"kafka {operation} failed: {exc!r}")


async def connection_problem(
    bootstrap: str, options: dict[str, Any], *, timeout_s: float
) -> str | None:
    """Why a client with ``options`` cannot use the first broker of ``bootstrap``: one
    line, or None when a direct connection works (the failure was elsewhere).

    Never raises for the connection itself; the line names no secret.
    """
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    protocol = options.get("security_protocol", "PLAINTEXT")
    try:
        async with asyncio.timeout(timeout_s):
            conn = await create_conn(
                host.strip("[]"), int(port), request_timeout_ms=int(timeout_s * 1000), **options
            )
    except (TimeoutError, OSError, KafkaError) as exc:
        return describe_failure(host, port, protocol, exc)
    conn.close()
    return None


async def explain_kafka_error(
    exc: BaseException,
    operation: str,
    timeout_s: float,
    bootstrap: str,
    options: dict[str, Any],
) -> BusError:
    """:func:`translate_kafka_error`, with the real reason when no broker could be reached.

    aiokafka says only "Unable to bootstrap" for a wrong password, a TLS listener spoken
    to in plaintext or an untrusted certificate: the first broker is asked directly once
    (bounded) and its answer replaces that, in one line naming no secret.
    """
    error = translate_kafka_error(exc, operation, timeout_s)
    if isinstance(exc, KafkaConnectionError):
        bound_s = min(max(timeout_s, 1.0), _DIAGNOSIS_TIMEOUT_S)
        problem = await connection_problem(bootstrap, options, timeout_s=bound_s)
        if problem is not None:
            return TransportError(f"kafka {operation} failed: {problem}")
    return error


KAFKA_ERRORS = (KafkaError, ConsumerStoppedError, IllegalOperation)


async def _close_quietly(*closers: Callable[[], Awaitable[object]], timeout_s: float) -> None:
    """Run each closer, bounded; its failure is logged, never raised (cleanup only)."""
    for close in closers:
        try:
            async with asyncio.timeout(timeout_s):
                await close()
        except (*KAFKA_ERRORS, TimeoutError, OSError) as exc:
            logger.debug("closing a kafka client failed: %r", exc)


async def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 1,
    replication: int = 1,
    *,
    timeout_s: float = _ADMIN_TIMEOUT_S,
    security: KafkaSecurity = _PLAINTEXT,
    topic_configs: Mapping[str, str] | None = None,
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are.

    ``topic_configs``: topic-level settings of the ones created (e.g. ``retention.ms``).

    Raises:
        BusTimeout: not done within ``timeout_s``.
        TransportError: the broker refused (bad name, too few brokers, ...).
    """
    wanted = sorted(set(names))
    if not wanted:
        return
    options = security.client_options()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000), **options
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            response = await admin.create_topics(
                [
                    NewTopic(name, partitions, replication, topic_configs=dict(topic_configs or {}))
                    for name in wanted
                ]
            )
            for entry in response.topic_errors:
                name, code = entry[0], entry[1]
                if code and code != TopicAlreadyExistsError.errno:
                    raise for_code(code)(f"create topic {name}")
    except (*KAFKA_ERRORS, TimeoutError) as exc:
        raise await explain_kafka_error(
            exc, "topic creation", timeout_s, bootstrap, options
        ) from exc
    finally:
        await _close_quietly(admin.close, timeout_s=_DIAGNOSIS_TIMEOUT_S)
    logger.debug("topics present: %s", wanted)


async def consumer_group_lag(
    bootstrap: str,
    group_id: str,
    topic: str,
    *,
    timeout_s: float = _ADMIN_TIMEOUT_S,
    security: KafkaSecurity = _PLAINTEXT,
) -> int:
    """One lag query (:meth:`KafkaLagReader.lag`) on clients opened for it alone.

    For one-off callers; whoever asks again and again keeps a :class:`KafkaLagReader`.
    """
    reader = KafkaLagReader(bootstrap, timeout_s=timeout_s, security=security)
    try:
        return await reader.lag(group_id, topic)
    finally:
        await reader.close()


class KafkaLagReader:
    """Consumer-group lag over clients kept open from one query to the next.

    The autoscaler asks for every pool's lag every interval; opening an admin client and
    a consumer per query (connect, api versions, metadata, then close) cost the broker
    about four connections a second per pool. This reader starts both on its first query
    and keeps them, with each topic's partitions, until a query fails: a failed, timed
    out or cancelled query hands both clients to be closed, and the next query starts new
    ones (so a broker that went away is read again once it is back). Closing is never
    left undone: it runs as its own task, which a cancelled caller does not stop, and
    :meth:`close` waits for it. One event loop; queries run one at a time.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        timeout_s: float = _ADMIN_TIMEOUT_S,
        security: KafkaSecurity = _PLAINTEXT,
    ) -> None:
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        self._options = security.client_options()
        self._clients: tuple[AIOKafkaAdminClient, AIOKafkaConsumer] | None = None
        # topic -> (when described, its partitions)
        self._partitions: dict[str, tuple[float, list[TopicPartition]]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._one_query = asyncio.Lock()
        self._closed = False

    async def lag(self, group_id: str, topic: str) -> int:
        """Records of ``topic`` the group has not committed: sum of end - committed offsets.

        A partition without a committed offset counts from its beginning offset.

        Raises:
            BusTimeout: not done within the reader's ``timeout_s``.
            TransportError: the broker refused or the topic does not exist.
            ConnectionClosed: the reader is closed.
        """
        async with self._one_query:
            if self._closed:
                raise ConnectionClosed("kafka lag query: the reader is closed")
            try:
                async with asyncio.timeout(self._timeout_s):
                    admin, offsets = await self._started()
                    partitions = await self._partitions_of(admin, topic)
                    committed = await admin.list_consumer_group_offsets(
                        group_id, partitions=partitions
                    )
                    ends = await offsets.end_offsets(partitions)
                    starts = await offsets.beginning_offsets(partitions)
            except (*KAFKA_ERRORS, TimeoutError) as exc:
                await asyncio.shield(self._discard_clients())
                raise await explain_kafka_error(
                    exc, "lag query", self._timeout_s, self._bootstrap, self._options
                ) from exc
            except BaseException:
                # Cancelled (the caller's own bound): the clients may be mid-request.
                self._discard_clients()
                raise
        lag = 0
        for partition in partitions:
            done = committed.get(partition)
            start = done.offset if done is not None and done.offset >= 0 else starts[partition]
            lag += max(0, ends[partition] - start)
        return lag

    async def close(self) -> None:
        """Close the clients (bounded); later queries raise ConnectionClosed."""
        self._closed = True
        self._discard_clients()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _started(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._clients is None:
            request_timeout_ms = int(self._timeout_s * 1000)
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self._bootstrap,
                request_timeout_ms=request_timeout_ms,
                **self._options,
            )
            # A group-less consumer only reads offsets here; it never joins or commits.
            offsets = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                enable_auto_commit=False,
                request_timeout_ms=request_timeout_ms,
                **self._options,
            )
            # Held before they start: a start that fails or times out still leaves
            # connections and tasks, which the discard closes.
            self._clients = (admin, offsets)
            await admin.start()
            await offsets.start()
        return self._clients

    async def _partitions_of(self, admin: AIOKafkaAdminClient, topic: str) -> list[TopicPartition]:
        now = time.monotonic()
        known = self._partitions.get(topic)
        if known is not None and now - known[0] < _PARTITIONS_MAX_AGE_S:
            return known[1]
        described = await admin.describe_topics([topic])
        if not described or described[0]["error_code"]:
            code = described[0]["error_code"] if described else -1
            raise for_code(code)(f"describe topic {topic}")
        partitions = [TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]]
        self._partitions[topic] = (now, partitions)
        return partitions

    def _discard_clients(self) -> asyncio.Task[None]:
        """Forget the clients and start closing them; the task closes them even when
        whoever awaits it is cancelled (its reference is held until it is done)."""
        clients, self._clients = self._clients, None
        self._partitions.clear()
        closers = [] if clients is None else [clients[0].close, clients[1].stop]
        task = asyncio.get_running_loop().create_task(
            _close_quietly(*closers, timeout_s=_DIAGNOSIS_TIMEOUT_S)
        )
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task
