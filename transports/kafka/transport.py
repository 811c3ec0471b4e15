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

Low-latency settings (all configurable on :class:`KafkaTransportConfig`; measured on a
2-core machine by the Kafka round-trip benchmark, now the anchor of ``raybus bench`` B6)
    ``linger_ms=0``: aiokafka's 1 ms linger cost ~2 ms per lone send (p50 round trip
    5-12 ms against 2-3 ms at 0), and concurrent sends batch anyway: aiokafka keeps one
    produce request per broker in flight, and records sent meanwhile join the next.
    Re-measured on December 5 (``raybus bench --only B6``, bus of 2 workers): linger 2 ms
    on both sides gave 1,743 calls/s at 64 callers against 1,695 at 0 (within noise) but
    a lone call's p50 of 7.6 ms against 1.9 ms, so 0 stays the default.
    ``fetch_max_wait_ms=20``: with ``fetch_min_bytes=1`` the broker answers a fetch as
    soon as a record arrives, so this only bounds how long an idle fetch is parked (5 to
    500 ms measured the same latency); 20 keeps close and rebalances snappy for a few
    idle fetches per second. ``heartbeat_interval_ms=500``: members learn of a rebalance
    within half a second instead of three. ``commit_interval_ms=0``: ``ack`` waits for
    its commit (simplest to reason about); raise it for throughput, see the config.
    Producer: ``acks="all"`` and idempotence on, so a retried produce never duplicates
    or reorders a record.

The broker runs with topic auto-creation off: :meth:`KafkaTransport.start` creates the
topics it uses (idempotently) with the configured partitions and replication.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Iterable, Iterator
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import (
    MessageSizeTooLargeError,
    RecordTooLargeError,
)

from transports.base import Delivery, TransportBase, TransportCapabilities, TransportType
from transports.codec import (
    DecodeLimits,
    decode_message,
    encode_message,
)
from transports.envelope import Envelope
from transports.errors import (
    BusError,
    ConnectionClosed,
    InvalidMessage,
    InvalidRequest,
    MessageTooLarge,
    TransportError,
)
from transports.kafka.admin import (
    KAFKA_ERRORS,
    TopicNames,
    consumer_group_lag,
    ensure_topics,
    explain_kafka_error,
    translate_kafka_error,
)
from transports.kafka.clients import (
    commit_within,
    new_consumer,
    new_producer,
    record_kept,
    wait_for_assignment,
    wait_for_topic_metadata,
)
from transports.kafka.config import KafkaTransportConfig
from transports.kafka.offsets import (
    Claim,
    PartitionBook,
    Settled,
    due_commits,
    forget_unassigned,
    mark_committed,
)
from transports.kafka.producer import ProducerSlot
from transports.kafka.records import (
    ENVELOPE_MARKER,
    dispose_of_undecodable,
    header_list,
    headers_of,
)
from transports.message import TransportMessage

__all__ = [
    "KafkaTransport",
    "KafkaTransportConfig",
    "TopicNames",
    "consumer_group_lag",
    "ensure_topics",
]

logger = logging.getLogger(__name__)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, transport: KafkaTransport, consumer: AIOKafkaConsumer) -> None:
        self._transport = transport
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        if self._transport._consumer is not self._consumer:
            return  # a replaced consumer leaving: its deliveries are stale already
        # The next owner starts from the committed offset: commit what was acked so it is
        # not redone there. Deliveries still in flight here become stale (their ack is a
        # no-op) and are redelivered to the new owner.
        try:
            await self._transport._commit(closing=True)
        except BusError as exc:
            logger.warning("commit before a rebalance failed; acked records may repeat: %s", exc)
        for partition in revoked:
            self._transport._books.pop(partition, None)
        logger.info("kafka partitions revoked: %s", sorted(map(tuple, revoked)))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        if self._transport._consumer is not self._consumer:
            return
        # None for any other partition: it could never be committed here (see _commit).
        self._transport._books = {partition: PartitionBook() for partition in assigned}
        logger.info("kafka partitions assigned: %s", sorted(map(tuple, assigned)))


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
        self._producer: ProducerSlot | None = None
        self._options: dict[str, Any] = {}  # the clients' TLS and SASL, made in start
        self._consumer: AIOKafkaConsumer | None = None
        self._books: dict[TopicPartition, PartitionBook] = {}
        self._stash: Any = None  # a fetched record a cancelled receive did not return
        self._closed = asyncio.Event()
        self._receive_lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._commit_timer: asyncio.Task[None] | None = None

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

    async def wait_for_assignment(self, timeout_s: float) -> None:
        """Return once every receive topic has a partition assigned (see
        :func:`~transports.kafka.clients.wait_for_assignment`). Raises BusTimeout."""
        if self._consumer is not None:
            await wait_for_assignment(self._consumer, self._config.receive_topics, timeout_s)

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
                config.bootstrap,
                topics,
                config.partitions,
                config.replication_factor,
                security=config.security,
            )
        options = config.security.client_options()  # one TLS context and token cache
        self._options = options
        producer = ProducerSlot(
            lambda: new_producer(config, options),
            name=config.client_id,
            close_timeout_s=config.close_timeout_s,
        )
        consumer: AIOKafkaConsumer | None = None
        timeout_s = config.request_timeout_ms / 1000
        try:
            await producer.start()
            if config.receive_topics:
                consumer = new_consumer(config, options)
                await consumer.start()
                consumer.subscribe(list(config.receive_topics), listener=_Rebalance(self, consumer))
                await wait_for_topic_metadata(consumer, config.receive_topics, timeout_s)
        except BusError:
            await self._stop_clients(producer, consumer)
            raise
        except KAFKA_ERRORS as exc:
            await self._stop_clients(producer, consumer)
            explained = explain_kafka_error(exc, "start", timeout_s, config.bootstrap, options)
            raise await explained from exc
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
        topic = self._config.send_topic or (envelope.reply_to if envelope else None)
        if topic is None:
            raise TransportError("kafka send needs a send_topic or an envelope with reply_to")
        await self.send_frame_to(topic, payload, envelope)

    async def send_frame_to(
        self, topic: str, payload: bytes, envelope: Envelope | None = None
    ) -> None:
        """Produce one encoded body to ``topic`` (e.g. the request topic of a pool)."""
        if len(payload) > self._config.max_message_bytes:
            raise MessageTooLarge(len(payload), self._config.max_message_bytes)
        headers = [] if envelope is None else header_list(envelope.to_headers())
        await self._produce(topic, payload, self._key_for(envelope), headers, "send")

    def _key_for(self, envelope: Envelope | None) -> bytes:
        if envelope is None:
            return self._config.client_id.encode("utf-8")
        return json.dumps(envelope.correlation_key, separators=(",", ":")).encode("utf-8")

    async def queue_frame_to(
        self, topic: str, payload: bytes, envelope: Envelope | None = None
    ) -> Awaitable[None]:
        """Queue one encoded body for ``topic`` in order; await the result for its ack.

        Records queued one after another keep that order on their partition (the
        producer is idempotent), so a sender that must keep order need not wait for each
        ack before queueing the next: waiting costs a broker round trip per record, which
        capped a worker's answers at a few hundred per second.

        Raises (here or from the returned awaitable): as :meth:`send_frame_to`.
        """
        if len(payload) > self._config.max_message_bytes:
            raise MessageTooLarge(len(payload), self._config.max_message_bytes)
        headers = [] if envelope is None else header_list(envelope.to_headers())
        return await self._queue(topic, payload, self._key_for(envelope), headers, "send")

    async def _produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        operation: str,
    ) -> None:
        await (await self._queue(topic, value, key, headers, operation))

    async def _queue(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        operation: str,
    ) -> Awaitable[None]:
        producer = self._producer
        if producer is None or self._closed.is_set():
            raise ConnectionClosed("kafka transport is closed or not started")
        deadline = asyncio.get_running_loop().time() + self._config.delivery_timeout_s
        with self._kafka_errors(len(value), topic, operation):
            async with asyncio.timeout_at(deadline):
                acked = await producer.send(topic, value, key, headers)

        async def confirmed() -> None:
            with self._kafka_errors(len(value), topic, operation):
                async with asyncio.timeout_at(deadline):
                    await acked

        return confirmed()

    @contextlib.contextmanager
    def _kafka_errors(self, size: int, topic: str, operation: str) -> Iterator[None]:
        try:
            yield
        except (MessageSizeTooLargeError, RecordTooLargeError) as exc:
            raise MessageTooLarge(size, self._config.max_message_bytes) from exc
        except (*KAFKA_ERRORS, TimeoutError) as exc:
            if self._closed.is_set():
                raise ConnectionClosed("kafka transport closed while sending") from exc
            timeout_s = self._config.delivery_timeout_s
            raise translate_kafka_error(exc, f"{operation} to {topic}", timeout_s) from exc

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
                if self._config.group_id is not None and partition not in consumer.assignment():
                    # Fetched before a rebalance gave its partition to another member
                    # (stashed, or read as the group rebalanced): that one reads it.
                    continue
                book = self._books.setdefault(partition, PartitionBook())
                claim = book.claim(record.offset)
                if claim is None:
                    continue  # in flight or acked here already: a nack's seek re-read it
                try:
                    return self._delivery(record, partition, book, claim)
                except (InvalidMessage, MessageTooLarge) as error:
                    try:
                        await self._dispose_of_undecodable(record, error)
                    except BaseException:
                        # Not answered nor dead-lettered (failed or cancelled): read it
                        # again next time rather than leave it in flight for good.
                        self._rewind(partition, book, record.offset, claim)
                        raise
                    await self._settle(partition, book, record.offset, claim, Settled.ACKED)
                    raise

    async def _next_record(self, consumer: AIOKafkaConsumer) -> Any:
        if self._stash is not None:
            record, self._stash = self._stash, None
            return record
        getting = asyncio.ensure_future(consumer.getone())
        closing = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({getting, closing}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            self._stash = record_kept(getting)
            raise
        finally:
            closing.cancel()
        if self._closed.is_set():
            self._stash = record_kept(getting)
            raise ConnectionClosed("kafka transport is closed")
        try:
            return getting.result()
        except KAFKA_ERRORS as exc:
            if not getattr(exc, "retriable", False):
                await self._replace_consumer(consumer, exc)
            raise translate_kafka_error(
                exc, "receive", self._config.request_timeout_ms / 1000
            ) from exc

    async def _replace_consumer(self, consumer: AIOKafkaConsumer, cause: BaseException) -> None:
        """Put a new consumer in the place of one that cannot go on.

        aiokafka's consumer runs its group membership in a background task; when that
        task dies (e.g. ``AssertionError('Did we not perform bootstrap?')`` while the
        broker was away) every later ``getone`` raises its error again, and the member
        never rejoins its group: the pool's partitions would go unread for good. The new
        consumer joins the group and reads on from the committed offsets; deliveries of
        the old one still in flight become stale (their ack does nothing) and come again.
        If the new one cannot start (the broker is still away), the old one stays and the
        next receive tries again.
        """
        if self._consumer is not consumer or self._closed.is_set():
            return
        name = self._config.client_id
        logger.warning("kafka consumer %s cannot go on (%r): replacing it", name, cause)
        fresh = new_consumer(self._config, self._options)
        try:
            async with asyncio.timeout(self._config.request_timeout_ms / 1000):
                await fresh.start()
        except (*KAFKA_ERRORS, TimeoutError) as exc:
            logger.warning("a new kafka consumer could not start yet: %r", exc)
            await self._stop_clients(None, fresh)
            return
        fresh.subscribe(list(self._config.receive_topics), listener=_Rebalance(self, fresh))
        self._consumer, self._stash = fresh, None
        self._books.clear()
        await self._stop_clients(None, consumer)

    def _delivery(
        self, record: Any, partition: TopicPartition, book: PartitionBook, claim: Claim
    ) -> Delivery:
        headers = headers_of(record)
        envelope = Envelope.from_headers(headers) if ENVELOPE_MARKER in headers else None
        if record.value is None:
            raise InvalidRequest("the record has no value")
        message = decode_message(record.value, self._limits)
        offset = record.offset

        async def ack() -> None:
            await self._settle(partition, book, offset, claim, Settled.ACKED)

        async def nack() -> None:
            await self._settle(partition, book, offset, claim, Settled.NACKED)

        return Delivery(message, envelope, len(record.value), ack, nack)

    async def _settle(
        self,
        partition: TopicPartition,
        book: PartitionBook,
        offset: int,
        claim: Claim,
        outcome: Settled,
    ) -> None:
        if self._books.get(partition) is not book or not book.settle(offset, claim, outcome):
            logger.debug("stale %s of %s@%d ignored", outcome.value, partition, offset)
            return
        if outcome is Settled.NACKED:
            self._seek_back(partition, book)
        elif self._config.commit_interval_ms == 0:
            await self._commit()
        elif self._commit_timer is None or self._commit_timer.done():
            self._commit_timer = asyncio.create_task(self._commit_later())

    async def _commit_later(self) -> None:
        # Pacing, not synchronisation: every ack of this interval rides on one commit.
        # Acks that land while a commit is in flight see this timer still running and
        # start none of their own, so the timer goes round until nothing is left due.
        while True:
            await asyncio.sleep(self._config.commit_interval_ms / 1000)
            try:
                await self._commit()
            except BusError as exc:
                logger.warning("interval commit failed; retrying next interval: %s", exc)
            if self._closed.is_set() or not any(
                book.commit_point is not None and book.commit_point != book.committed
                for book in self._books.values()
            ):
                return

    def _rewind(
        self, partition: TopicPartition, book: PartitionBook, offset: int, claim: Claim
    ) -> None:
        if self._books.get(partition) is book and book.settle(offset, claim, Settled.NACKED):
            self._seek_back(partition, book)

    def _seek_back(self, partition: TopicPartition, book: PartitionBook) -> None:
        offset = book.first_nacked()
        if offset is None or self._consumer is None or self._closed.is_set():
            return
        stash = self._stash
        if stash is not None and TopicPartition(stash.topic, stash.partition) == partition:
            self._stash = None  # the seek fetches it again, in order
        self._consumer.seek(partition, offset)

    async def _commit(self, *, closing: bool = False) -> None:
        consumer = self._consumer
        if consumer is None or self._config.group_id is None:
            return
        # One commit at a time, each carrying the latest points: an older commit can
        # never land after a newer one and move a partition's offset backwards.
        async with self._commit_lock:
            # aiokafka refuses a whole commit naming a partition the member no longer
            # owns: one stale book would block every later commit here for good.
            for partition in forget_unassigned(self._books, consumer.assignment()):
                logger.info("kafka book of %s dropped: no longer assigned here", partition)
            due = due_commits(self._books)
            if not due or (self._closed.is_set() and not closing):
                return
            timeout_s = self._config.request_timeout_ms / 1000
            await commit_within(consumer, due, timeout_s)
            mark_committed(self._books, due)
            logger.debug("kafka committed %s", due)

    async def _dispose_of_undecodable(self, record: Any, error: BusError) -> None:
        """Answer the sender with an error, or dead-letter the record (see module doc)."""
        config = self._config
        plan = dispose_of_undecodable(
            record, error, config.receive_topics, config.dead_letter_topic
        )
        key = self._key_for(plan.envelope) if plan.is_reply else record.key
        operation = "error reply" if plan.is_reply else "dead-letter"
        await self._produce(plan.topic, plan.value, key, plan.headers, operation)
        if plan.is_reply:
            logger.info("undecodable record %s answered on %s: %s", plan.source, plan.topic, error)
        else:
            logger.warning(
                "undecodable record %s dead-lettered to %s: %s", plan.source, plan.topic, error
            )

    async def close(self) -> None:
        """Stop the clients: pending receives wake with ConnectionClosed, sends flush.

        Uncommitted deliveries are not acked; the group redelivers them.
        """
        if self._closed.is_set():
            return
        self._closed.set()
        if self._commit_timer is not None:
            self._commit_timer.cancel()
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
        self, producer: ProducerSlot | None, consumer: AIOKafkaConsumer | None
    ) -> None:
        # Closing must neither hang nor raise: the caller is already done with us.
        if consumer is not None:
            try:
                async with asyncio.timeout(self._config.close_timeout_s):
                    await consumer.stop()
            except (*KAFKA_ERRORS, TimeoutError, OSError) as exc:
                logger.warning("stopping a kafka consumer failed: %r", exc)
        if producer is not None:
            await producer.close()  # bounded and quiet by itself
