"""The Kafka transport: JSON-RPC bodies as records, the envelope as record headers.

One :class:`KafkaTransport` produces to one topic (or, with ``send_topic=None``, to each
envelope's ``reply_to``) and consumes from its receive topics, in a consumer group or
alone. The design choices, and why:

Delivery and acknowledgement
    Auto-commit is off. ``Delivery.ack()`` marks its record done; the transport commits a
    partition's offset only up to the first record not yet acked (records may be acked
    out of order, the commit never passes an unacked one). ``Delivery.nack()`` seeks the
    partition back to that record at once, so the next ``receive`` redelivers it; records
    after it that were already delivered are not delivered a second time by this
    consumer (their own ``ack``/``nack`` is still to come). After a rebalance, whatever
    was not committed is redelivered to the partition's new owner (at least once; the
    idempotency ledger stops a duplicate from running twice). Closing leaves the group,
    so uncommitted records move to the remaining members promptly.

Ordering
    The record key is the envelope's correlation key, so one request and everything
    about it (progress, response) stays in one partition, in order, while different
    requests of one client spread over the pool. Without an envelope the key is the
    transport's ``client_id``: all its keyless messages keep their order.

Undecodable records (handled inside, so the partition always moves on)
    A record whose headers or body do not decode is answered or dead-lettered, committed
    past, and then ``receive`` raises the error (InvalidMessage, or MessageTooLarge), so
    the caller sees it and the next ``receive`` returns the next record. If the record
    carries a ``raybus-reply-to`` header naming a topic that is not one of ours, the
    sender gets a JSON-RPC error Response there (with the record's envelope); otherwise
    the raw bytes and headers go to the dead-letter topic ``<prefix>mcp.dlq`` with
    ``raybus-dlq-error`` and ``raybus-dlq-source`` headers. If that produce fails the
    record is nacked (read again by the next ``receive``, never lost) and ``receive``
    raises the produce error.

Low-latency settings (all configurable on :class:`KafkaTransportConfig`)
    ``linger_ms=1``: a lone send waits at most 1 ms for company, concurrent sends still
    batch. ``fetch_max_wait_ms=20``: with ``fetch_min_bytes=1`` the broker answers a fetch
    as soon as a record arrives, so this only bounds how long an idle fetch is parked;
    small keeps shutdown and rebalances snappy at the cost of a few idle fetches per
    second. ``heartbeat_interval_ms=500``: members learn of a rebalance within half a
    second instead of the default three. Producer: ``acks="all"`` and idempotence on, so
    a retried produce never duplicates or reorders a record.

The broker runs with topic auto-creation off: :meth:`KafkaTransport.start` creates the
topics it uses (idempotently) with the configured partitions and replication.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any, Literal, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ConsumerStoppedError,
    IllegalOperation,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    for_code,
)
from pydantic import BaseModel, ConfigDict, Field

from transports.base import Delivery, TransportBase, TransportCapabilities, TransportType
from transports.codec import (
    DEFAULT_MAX_DEPTH,
    DecodeLimits,
    decode_message,
    encode_message,
    error_response_for,
)
from transports.envelope import Envelope
from transports.errors import (
    INVALID_REQUEST,
    BusError,
    BusTimeout,
    ConnectionClosed,
    InvalidMessage,
    InvalidRequest,
    MessageTooLarge,
    TransportError,
)
from transports.message import Response, TransportMessage

__all__ = [
    "KafkaTransport",
    "KafkaTransportConfig",
    "TopicNames",
    "consumer_group_lag",
    "ensure_topics",
]

logger = logging.getLogger(__name__)

# Under the broker's default message.max.bytes (1 MiB + 12): room for headers and batch.
DEFAULT_KAFKA_MAX_MESSAGE_BYTES = 1_000_000
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_ENVELOPE_MARKER = "raybus-client-id"  # Envelope.to_headers always writes it
_DLQ_DETAIL_CHARS = 1000
_ADMIN_TIMEOUT_S = 30.0


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


class KafkaTransportConfig(BaseModel):
    """Where a :class:`KafkaTransport` sends and receives, and how it talks to Kafka.

    Attributes:
        bootstrap: ``host:port[,host:port...]`` of the brokers.
        send_topic: where ``send`` produces; None = to each envelope's ``reply_to``.
        receive_topics: what ``receive`` consumes; empty = a send-only transport.
        group_id: the consumer group (a pool shares one); None = consume every
            partition alone, with nothing committed (``ack`` only does bookkeeping).
        topic_prefix: prefix of the dead-letter topic (and of :attr:`topics`).
        create_topics: create send, receive and dead-letter topics in ``start``.
        partitions / replication_factor: for the topics it creates.
        client_id: names the clients in broker logs; the key of keyless sends.
        max_message_bytes / max_depth: bounds on bodies sent and accepted.
        linger_ms, fetch_max_wait_ms, heartbeat_interval_ms: see the module docstring.
        request_timeout_ms / session_timeout_ms: aiokafka's request and group bounds.
        delivery_timeout_s: bound on one ``send`` until the broker acknowledged it.
        close_timeout_s: bound on stopping the clients.
        auto_offset_reset: where a group without a committed offset starts.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap: str
    send_topic: str | None = None
    receive_topics: tuple[str, ...] = ()
    group_id: str | None = None
    topic_prefix: str = ""
    create_topics: bool = True
    partitions: int = Field(default=1, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    client_id: str = "raybus"
    max_message_bytes: int = Field(default=DEFAULT_KAFKA_MAX_MESSAGE_BYTES, ge=1)
    max_depth: int = Field(default=DEFAULT_MAX_DEPTH, ge=1)
    linger_ms: int = Field(default=1, ge=0)
    fetch_max_wait_ms: int = Field(default=20, ge=0)
    heartbeat_interval_ms: int = Field(default=500, ge=1)
    session_timeout_ms: int = Field(default=10_000, ge=1)
    request_timeout_ms: int = Field(default=15_000, ge=1)
    delivery_timeout_s: float = Field(default=30.0, gt=0)
    close_timeout_s: float = Field(default=10.0, gt=0)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    @property
    def dead_letter_topic(self) -> str:
        return self.topics.dlq_topic()


def _translate(exc: BaseException, operation: str, timeout_s: float = 0.0) -> BusError:
    """Our error for an aiokafka one (callers raise it ``from exc``)."""
    if isinstance(exc, KafkaTimeoutError | RequestTimedOutError | TimeoutError):
        return BusTimeout(f"kafka {operation}", timeout_s)
    if isinstance(exc, ConsumerStoppedError):
        return ConnectionClosed(f"kafka {operation}: the consumer is stopped")
    if isinstance(exc, KafkaError) and exc.retriable:
        return ConnectionClosed(f"kafka {operation} failed: {exc!r}")
    return TransportError(f"kafka {operation} failed: {exc!r}")


_KAFKA_ERRORS = (KafkaError, ConsumerStoppedError, IllegalOperation)


async def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 1,
    replication: int = 1,
    *,
    timeout_s: float = _ADMIN_TIMEOUT_S,
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are.

    Raises:
        BusTimeout: not done within ``timeout_s``.
        TransportError: the broker refused (bad name, too few brokers, ...).
    """
    wanted = sorted(set(names))
    if not wanted:
        return
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            try:
                response = await admin.create_topics(
                    [NewTopic(name, partitions, replication) for name in wanted]
                )
                for entry in response.topic_errors:
                    name, code = entry[0], entry[1]
                    if code and code != TopicAlreadyExistsError.errno:
                        raise for_code(code)(f"create topic {name}")
            finally:
                await admin.close()
    except (*_KAFKA_ERRORS, TimeoutError) as exc:
        raise _translate(exc, "topic creation", timeout_s) from exc
    logger.debug("topics present: %s", wanted)


async def consumer_group_lag(
    bootstrap: str, group_id: str, topic: str, *, timeout_s: float = _ADMIN_TIMEOUT_S
) -> int:
    """Records of ``topic`` the group has not committed: sum of end - committed offsets.

    A partition without a committed offset counts from its beginning offset.

    Raises:
        BusTimeout: not done within ``timeout_s``.
        TransportError: the broker refused or the topic does not exist.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    # A group-less consumer only reads offsets here; it never joins or commits.
    offsets = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            await offsets.start()
            try:
                described = await admin.describe_topics([topic])
                if not described or described[0]["error_code"]:
                    code = described[0]["error_code"] if described else -1
                    raise for_code(code)(f"describe topic {topic}")
                partitions = [
                    TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]
                ]
                committed = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
                ends = await offsets.end_offsets(partitions)
                starts = await offsets.beginning_offsets(partitions)
            finally:
                await admin.close()
                await offsets.stop()
    except (*_KAFKA_ERRORS, TimeoutError) as exc:
        raise _translate(exc, "lag query", timeout_s) from exc
    lag = 0
    for partition in partitions:
        done = committed.get(partition)
        start = done.offset if done is not None and done.offset >= 0 else starts[partition]
        lag += max(0, ends[partition] - start)
    return lag


class _Settled(Enum):
    ACKED = "acked"
    NACKED = "nacked"


class _Claim:
    """One delivery of one record; its ack/nack count only while it is current."""

    __slots__ = ()


class _PartitionBook:
    """Delivered offsets of one assigned partition, in offset order, and what became of them.

    The commit point is one past the longest prefix of acked records: a record acked out
    of order waits for the ones before it.
    """

    def __init__(self) -> None:
        self.marks: dict[int, _Claim | _Settled] = {}
        self.commit_point: int | None = None  # next offset to commit, once known
        self.committed: int | None = None

    def claim(self, offset: int) -> _Claim | None:
        """A new claim on ``offset``, or None when it is in flight or already acked."""
        if self.commit_point is not None and offset < self.commit_point:
            return None
        mark = self.marks.get(offset)
        if mark is not None and mark is not _Settled.NACKED:
            return None
        claim = _Claim()
        last = next(reversed(self.marks), None)
        self.marks[offset] = claim
        if last is not None and offset < last and mark is None:
            self.marks = dict(sorted(self.marks.items()))
        return claim

    def settle(self, offset: int, claim: _Claim, outcome: _Settled) -> bool:
        """Record an ack or nack; False when ``claim`` is no longer the current one."""
        if self.marks.get(offset) is not claim:
            return False
        self.marks[offset] = outcome
        while self.marks:
            first = next(iter(self.marks))
            if self.marks[first] is not _Settled.ACKED:
                break
            del self.marks[first]
            self.commit_point = first + 1
        return True

    def first_nacked(self) -> int | None:
        return next((o for o, m in self.marks.items() if m is _Settled.NACKED), None)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, transport: KafkaTransport) -> None:
        self._transport = transport

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # The next owner starts from the committed offset; deliveries still in flight
        # here become stale (their ack is a no-op) and are redelivered there.
        for partition in revoked:
            self._transport._books.pop(partition, None)
        logger.info("kafka partitions revoked: %s", sorted(map(tuple, revoked)))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        for partition in assigned:
            self._transport._books[partition] = _PartitionBook()
        logger.info("kafka partitions assigned: %s", sorted(map(tuple, assigned)))


def _headers_of(record: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in record.headers or ():
        try:
            headers[name] = bytes(value or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"header {name} is not UTF-8") from None
    return headers


class KafkaTransport(TransportBase):
    """A Transport over Kafka topics; build it, then ``await start()`` (or ``async with``).

    Raises (beyond the Transport protocol's): BusTimeout when the broker does not answer
    within the configured bounds; TransportError for a broker refusal or a transport
    configured without a topic for the operation.
    """

    def __init__(self, config: KafkaTransportConfig) -> None:
        self._config = config
        self._limits = DecodeLimits(config.max_message_bytes, config.max_depth)
        self._capabilities = TransportCapabilities(
            ordered=True,
            at_least_once=True,
            max_message_bytes=config.max_message_bytes,
            carries_envelope=True,
            peer_close_visible=False,
        )
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._books: dict[TopicPartition, _PartitionBook] = {}
        self._closed = asyncio.Event()
        self._receive_lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()

    @property
    def config(self) -> KafkaTransportConfig:
        return self._config

    @property
    def transport_type(self) -> TransportType:
        return TransportType.KAFKA

    @property
    def capabilities(self) -> TransportCapabilities:
        return self._capabilities

    def is_connected(self) -> bool:
        return self._producer is not None and not self._closed.is_set()

    def assignment(self) -> frozenset[tuple[str, int]]:
        """The ``(topic, partition)`` pairs this transport consumes right now."""
        if self._consumer is None:
            return frozenset()
        return frozenset((tp.topic, tp.partition) for tp in self._consumer.assignment())

    async def start(self) -> Self:
        """Create the topics (if configured) and start the producer and consumer.

        Raises:
            ConnectionClosed: the transport was closed.
            BusTimeout / TransportError: the broker is unreachable or refused.
        """
        if self._closed.is_set():
            raise ConnectionClosed("kafka transport is closed")
        if self._producer is not None:
            return self
        config = self._config
        if config.create_topics:
            topics = [*config.receive_topics, config.dead_letter_topic]
            if config.send_topic is not None:
                topics.append(config.send_topic)
            await ensure_topics(
                config.bootstrap, topics, config.partitions, config.replication_factor
            )
        producer = AIOKafkaProducer(
            bootstrap_servers=config.bootstrap,
            client_id=config.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=config.linger_ms,
            request_timeout_ms=config.request_timeout_ms,
            # Dead-lettering forwards records over our own cap, up to the broker's.
            max_request_size=max(config.max_message_bytes, 1024 * 1024) + 64 * 1024,
        )
        consumer: AIOKafkaConsumer | None = None
        try:
            await producer.start()
            if config.receive_topics:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=config.bootstrap,
                    client_id=config.client_id,
                    group_id=config.group_id,
                    enable_auto_commit=False,
                    auto_offset_reset=config.auto_offset_reset,
                    fetch_max_wait_ms=config.fetch_max_wait_ms,
                    heartbeat_interval_ms=config.heartbeat_interval_ms,
                    session_timeout_ms=config.session_timeout_ms,
                    request_timeout_ms=config.request_timeout_ms,
                )
                await consumer.start()
                consumer.subscribe(list(config.receive_topics), listener=_Rebalance(self))
        except _KAFKA_ERRORS as exc:
            await self._stop_clients(producer, consumer)
            raise _translate(exc, "start", config.request_timeout_ms / 1000) from exc
        self._producer, self._consumer = producer, consumer
        logger.info(
            "kafka transport %s started: send to %s, receive %s (group %s)",
            config.client_id,
            config.send_topic or "reply_to",
            list(config.receive_topics),
            config.group_id,
        )
        return self

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, message: TransportMessage, envelope: Envelope | None = None) -> None:
        """Produce one message; returns once the broker has it (acks=all).

        Raises:
            ConnectionClosed: not started or closed.
            MessageTooLarge: over ``max_message_bytes``; nothing was produced.
            TransportError: no destination (no send topic and no ``reply_to``).
        """
        await self.send_frame(encode_message(message), envelope)

    async def send_frame(self, payload: bytes, envelope: Envelope | None = None) -> None:
        """Produce one encoded body (the same contract as :meth:`send`)."""
        if len(payload) > self._config.max_message_bytes:
            raise MessageTooLarge(len(payload), self._config.max_message_bytes)
        topic = self._config.send_topic or (envelope.reply_to if envelope else None)
        if topic is None:
            raise TransportError("kafka send needs a send_topic or an envelope with reply_to")
        headers = [] if envelope is None else _header_list(envelope.to_headers())
        await self._produce(topic, payload, self._key_for(envelope), headers, "send")

    def _key_for(self, envelope: Envelope | None) -> bytes:
        if envelope is None:
            return self._config.client_id.encode("utf-8")
        return json.dumps(envelope.correlation_key, separators=(",", ":")).encode("utf-8")

    async def _produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        operation: str,
    ) -> None:
        producer = self._producer
        if producer is None or self._closed.is_set():
            raise ConnectionClosed("kafka transport is closed or not started")
        timeout_s = self._config.delivery_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                acked = await producer.send(topic, value, key=key, headers=headers)
                await acked
        except (MessageSizeTooLargeError, RecordTooLargeError) as exc:
            raise MessageTooLarge(len(value), self._config.max_message_bytes) from exc
        except (*_KAFKA_ERRORS, TimeoutError) as exc:
            if self._closed.is_set():
                raise ConnectionClosed("kafka transport closed while sending") from exc
            raise _translate(exc, f"{operation} to {topic}", timeout_s) from exc

    async def receive(self) -> Delivery:
        """The next record as a Delivery whose ``ack`` commits and ``nack`` redelivers.

        Raises:
            ConnectionClosed: not started, closed (also while waiting), or send-only.
            InvalidMessage / MessageTooLarge: the record did not decode; it was already
                answered or dead-lettered and committed past (see the module docstring).
        """
        consumer = self._consumer
        if consumer is None or self._closed.is_set():
            raise ConnectionClosed("kafka transport is closed, not started or send-only")
        async with self._receive_lock:
            while True:
                record = await self._next_record(consumer)
                partition = TopicPartition(record.topic, record.partition)
                book = self._books.setdefault(partition, _PartitionBook())
                claim = book.claim(record.offset)
                if claim is None:
                    continue  # in flight or acked here already: a nack's seek re-read it
                try:
                    return self._delivery(record, partition, book, claim)
                except (InvalidMessage, MessageTooLarge) as error:
                    try:
                        await self._dispose_of_undecodable(record, error)
                    except BusError:
                        # Not answered nor dead-lettered: read it again next time.
                        await self._settle(partition, book, record.offset, claim, _Settled.NACKED)
                        raise
                    await self._settle(partition, book, record.offset, claim, _Settled.ACKED)
                    raise

    async def _next_record(self, consumer: AIOKafkaConsumer) -> Any:
        getting = asyncio.ensure_future(consumer.getone())
        closing = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({getting, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not getting.done():
                getting.cancel()
                with contextlib.suppress(asyncio.CancelledError, *_KAFKA_ERRORS):
                    await getting
        if self._closed.is_set():
            if getting.done() and not getting.cancelled():
                getting.exception()  # retrieved: an error after close is expected
            raise ConnectionClosed("kafka transport is closed")
        try:
            return getting.result()
        except _KAFKA_ERRORS as exc:
            raise _translate(exc, "receive", self._config.request_timeout_ms / 1000) from exc

    def _delivery(
        self, record: Any, partition: TopicPartition, book: _PartitionBook, claim: _Claim
    ) -> Delivery:
        headers = _headers_of(record)
        envelope = Envelope.from_headers(headers) if _ENVELOPE_MARKER in headers else None
        if record.value is None:
            raise InvalidRequest("the record has no value")
        message = decode_message(record.value, self._limits)
        offset = record.offset

        async def ack() -> None:
            await self._settle(partition, book, offset, claim, _Settled.ACKED)

        async def nack() -> None:
            await self._settle(partition, book, offset, claim, _Settled.NACKED)

        return Delivery(message, envelope, len(record.value), ack, nack)

    async def _settle(
        self,
        partition: TopicPartition,
        book: _PartitionBook,
        offset: int,
        claim: _Claim,
        outcome: _Settled,
    ) -> None:
        if self._books.get(partition) is not book or not book.settle(offset, claim, outcome):
            logger.debug("stale %s of %s@%d ignored", outcome.value, partition, offset)
            return
        if outcome is _Settled.NACKED:
            rewind = book.first_nacked()
            if rewind is not None and self._consumer is not None and not self._closed.is_set():
                self._consumer.seek(partition, rewind)
            return
        await self._commit()

    async def _commit(self, *, closing: bool = False) -> None:
        consumer = self._consumer
        if consumer is None or self._config.group_id is None:
            return
        # One commit at a time, each carrying the latest points: an older commit can
        # never land after a newer one and move a partition's offset backwards.
        async with self._commit_lock:
            due = {
                partition: book.commit_point
                for partition, book in self._books.items()
                if book.commit_point is not None and book.commit_point != book.committed
            }
            if not due or (self._closed.is_set() and not closing):
                return
            timeout_s = self._config.request_timeout_ms / 1000
            try:
                async with asyncio.timeout(timeout_s):
                    await consumer.commit(dict(due))
            except (*_KAFKA_ERRORS, TimeoutError) as exc:
                raise _translate(exc, "commit", timeout_s) from exc
            for partition, point in due.items():
                book = self._books.get(partition)
                if book is not None:
                    book.committed = point
            logger.debug("kafka committed %s", due)

    async def _dispose_of_undecodable(self, record: Any, error: BusError) -> None:
        """Answer the sender with an error, or dead-letter the record (see module doc)."""
        try:
            headers = _headers_of(record)
            envelope = Envelope.from_headers(headers) if _ENVELOPE_MARKER in headers else None
        except InvalidMessage:
            envelope = None
        reply_to = envelope.reply_to if envelope is not None else None
        source = f"{record.topic}/{record.partition}/{record.offset}"
        if envelope is not None and reply_to and reply_to not in self._config.receive_topics:
            if isinstance(error, InvalidMessage):
                answer = error_response_for(error)
            else:
                answer = Response.failure(
                    None, INVALID_REQUEST, "Invalid Request", {"detail": str(error)}
                )
            await self._produce(
                reply_to,
                encode_message(answer),
                self._key_for(envelope),
                _header_list(envelope.to_headers()),
                "error reply",
            )
            logger.info("undecodable record %s answered on %s: %s", source, reply_to, error)
            return
        dlq_headers = [
            *((name, bytes(value or b"")) for name, value in record.headers or ()),
            ("raybus-dlq-error", str(error)[:_DLQ_DETAIL_CHARS].encode("utf-8")),
            ("raybus-dlq-source", source.encode("utf-8")),
        ]
        value = record.value if record.value is not None else b""
        await self._produce(
            self._config.dead_letter_topic, value, record.key, dlq_headers, "dead-letter"
        )
        logger.warning(
            "undecodable record %s dead-lettered to %s: %s",
            source,
            self._config.dead_letter_topic,
            error,
        )

    async def close(self) -> None:
        """Stop the clients: pending receives wake with ConnectionClosed, sends flush.

        Uncommitted deliveries are not acked; the group redelivers them.
        """
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            # Acks whose commit failed (e.g. during a rebalance) get one last chance.
            await self._commit(closing=True)
        except BusError as exc:
            logger.warning("final kafka commit failed; those records will be redelivered: %s", exc)
        producer, consumer = self._producer, self._consumer
        await self._stop_clients(producer, consumer)
        self._books.clear()
        logger.info("kafka transport %s closed", self._config.client_id)

    async def _stop_clients(
        self, producer: AIOKafkaProducer | None, consumer: AIOKafkaConsumer | None
    ) -> None:
        # Closing must neither hang nor raise: the caller is already done with us.
        for stop in (consumer.stop if consumer else None, producer.stop if producer else None):
            if stop is None:
                continue
            try:
                async with asyncio.timeout(self._config.close_timeout_s):
                    await stop()
            except (*_KAFKA_ERRORS, TimeoutError, OSError) as exc:
                logger.warning("stopping a kafka client failed: %r", exc)


def _header_list(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(name, value.encode("utf-8")) for name, value in headers.items()]
