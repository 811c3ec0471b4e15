"""Amazon SQS as a transport: one queue to send to, one to long-poll, a dead-letter queue.

Each transport sends to ``send_queue`` (or, without one, to the queue its envelope's
``reply_to`` names, which is how a worker answers per-client response queues) and
receives from ``receive_queue``. SQS delivers at least once: a received message stays
in the queue, invisible for ``visibility_timeout_s``, until :meth:`SqsDelivery.ack`
deletes it (call it only after the response was sent) or :meth:`SqsDelivery.nack`
makes it visible again. While a delivery is unsettled, a background task keeps
extending its visibility (``keep_visible``), so a tool that runs longer than the
visibility timeout is not handed to a second worker.

Failure handling:
    An undecodable message (bad JSON, bad JSON-RPC, over the size cap, bad envelope)
    raises :class:`~transports.errors.InvalidMessage` / ``MessageTooLarge`` from
    :meth:`SqsTransport.receive` and is left un-deleted: it reappears after the visibility
    timeout, and on the receive attempt after its ``max_receive_count``-th receive SQS's
    redrive policy moves it to the dead-letter queue (``<queue>-dlq``). So a poison message
    is refused exactly ``max_receive_count`` times, about ``visibility_timeout_s`` apart,
    and the transport keeps working meanwhile. On a FIFO queue it blocks its message
    group until then (SQS delivers nothing more of a group while one is in flight).

    botocore errors never escape: :func:`translate_client_error` maps them (a missing
    queue is ``ConnectionClosed``, an oversize body ``MessageTooLarge``, throttling and
    network faults ``ConnectionClosed``), and every call is bounded (``BusTimeout``).

Ordering: standard queues are not ordered (``capabilities.ordered`` is False); FIFO
queues (``fifo=True``) order per message group, the envelope's ``client_id``, and drop a
repeated request or response whose request key was seen in the last five minutes.

Peer close is invisible: a queue outlives the processes around it and may have many
senders, so ``receive`` never reports "the peer closed"; it waits until this end closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aioboto3
from botocore.exceptions import ClientError

from transports.base import Delivery, TransportBase, TransportCapabilities, TransportType
from transports.codec import DecodeLimits, decode_message
from transports.envelope import Envelope
from transports.errors import (
    BusTimeout,
    ConnectionClosed,
    InvalidMessage,
    MessageTooLarge,
    TransportError,
)
from transports.message import TransportMessage
from transports.sqs.wire import (
    _DEFAULT_GROUP,
    _QUEUE_EXISTS_CODES,
    ENVELOPE_ATTRIBUTE,
    SQS_MAX_MESSAGE_BYTES,
    QueueMissing,
    SqsConfig,
    _attributes_size,
    _deduplication_id,
    _encode_body,
    _envelope_attributes,
    _envelope_from_attributes,
    botocore_config,
    call_sqs,
    response_queue_name,
    translate_client_error,
)

__all__ = [
    "ENVELOPE_ATTRIBUTE",
    "SQS_MAX_MESSAGE_BYTES",
    "SqsConfig",
    "SqsDelivery",
    "SqsTransport",
    "response_queue_name",
    "translate_client_error",
]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class SqsDelivery(Delivery):
    """A :class:`Delivery` plus what SQS needs to delete or re-hide the message."""

    queue_url: str = ""
    receipt_handle: str = ""
    message_id: str = ""
    receive_count: int = 0
    _keeper: asyncio.Task[None] | None = field(default=None, repr=False)
    _settled: bool = field(default=False, repr=False)


class SqsTransport(TransportBase):
    """One end of an SQS pipe; ``await start()`` (or ``async with``) before use.

    Args:
        config: queues, polling and credentials.
    """

    def __init__(self, config: SqsConfig) -> None:
        self.config = config
        self._limits = DecodeLimits(config.max_message_bytes, config.max_depth)
        self._capabilities = TransportCapabilities(
            ordered=config.fifo,
            at_least_once=True,
            max_message_bytes=config.max_message_bytes,
            carries_envelope=True,
            # A queue outlives its senders and may have many: one sender's close is
            # invisible to the receiver, which keeps waiting until its own end closes.
            peer_close_visible=False,
        )
        self._stack: AsyncExitStack | None = None
        self._client: Any = None  # aiobotocore's SQS client: untyped, the raw edge
        self._urls: dict[str, str] = {}
        self._send_url: str | None = None
        self._receive_url: str | None = None
        self._buffer: deque[dict[str, Any]] = deque()
        self._poll: asyncio.Task[None] | None = None
        self._keepers: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the client and create (idempotently) the queues and dead-letter queues.

        Raises:
            ConnectionClosed: the endpoint is unreachable or refused a call.
            BusTimeout: a call did not finish within ``request_timeout_s``.
        """
        if self._stack is not None or self._closed:
            raise ConnectionClosed("SQS transport was already started or closed")
        cfg = self.config
        session = aioboto3.Session(**cfg.session_options())
        botocore_settings = botocore_config(cfg, max_pool_connections=32)
        self._stack = AsyncExitStack()
        try:
            self._client = await self._stack.enter_async_context(
                session.client("sqs", endpoint_url=cfg.endpoint_url, config=botocore_settings)
            )
            if cfg.receive_queue is not None:
                self._receive_url = await self.ensure_queue(cfg.receive_queue)
            if cfg.send_queue is not None:
                self._send_url = await self.ensure_queue(cfg.send_queue, owner=False)
        except BaseException:
            await self._stack.aclose()
            self._stack = None
            raise
        logger.info(
            "sqs transport started: send=%s receive=%s fifo=%s",
            cfg.send_queue,
            cfg.receive_queue,
            cfg.fifo,
        )

    async def __aenter__(self) -> Self:
        if self._stack is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop polling and extending; release buffered messages; close the client.

        Never raises for SQS faults (they are logged): closing must always finish.
        Unacknowledged deliveries already handed out come back after their visibility
        timeout, which is what at-least-once promises.
        """
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._poll, *self._keepers) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.request_timeout_s)
        if self._client is not None:
            await self._release_buffered()
            if self.config.delete_receive_queue_on_close and self.config.receive_queue:
                with contextlib.suppress(TransportError, BusTimeout):
                    await self.delete_queue(self.config.receive_queue)
        if self._stack is not None:
            await self._stack.aclose()
        self._client = None
        logger.info("sqs transport closed: receive=%s", self.config.receive_queue)

    # -- the Transport protocol --------------------------------------------------------

    @property
    def transport_type(self) -> TransportType:
        return TransportType.SQS

    @property
    def capabilities(self) -> TransportCapabilities:
        return self._capabilities

    @property
    def receive_queue_name(self) -> str | None:
        """The full name of the queue this end reads: what peers put in ``reply_to``."""
        name = self.config.receive_queue
        return None if name is None else self.config.full_name(name)

    def is_connected(self) -> bool:
        return self._client is not None and not self._closed

    async def send(self, message: TransportMessage, envelope: Envelope | None = None) -> None:
        """Send one message to ``send_queue`` (or the envelope's ``reply_to`` queue).

        Raises:
            ConnectionClosed: closed, not started, no destination, or the queue is gone.
            MessageTooLarge: the body is over ``max_message_bytes``, or body plus
                attributes over SQS's cap; nothing was sent.
            InvalidRequest: the message holds values JSON cannot represent.
            BusTimeout: SQS did not answer within ``request_timeout_s``.
        """
        await self._send(None, message, envelope)

    async def send_to(
        self, queue: str, message: TransportMessage, envelope: Envelope | None = None
    ) -> None:
        """Send one message to ``queue`` (a full queue name or URL), whatever the envelope says.

        A worker's request to a caller (sampling, elicitation) travels to the caller's
        queue while its envelope's ``reply_to`` names the worker, who awaits the answer.

        Raises:
            The same as :meth:`send`.
        """
        await self._send(queue, message, envelope)

    async def _send(
        self, queue: str | None, message: TransportMessage, envelope: Envelope | None
    ) -> None:
        self._check_open()
        body = _encode_body(message)
        if len(body) > self.config.max_message_bytes:
            raise MessageTooLarge(len(body), self.config.max_message_bytes)
        attributes = _envelope_attributes(envelope)
        total = len(body) + _attributes_size(attributes)
        if total > SQS_MAX_MESSAGE_BYTES:
            raise MessageTooLarge(total, SQS_MAX_MESSAGE_BYTES)
        if queue is not None:
            url = await self._url_of(queue)
        else:
            url = self._send_url or await self._reply_url(envelope)
        request: dict[str, Any] = {"QueueUrl": url, "MessageBody": body.decode("utf-8")}
        if attributes:
            request["MessageAttributes"] = attributes
        if self.config.fifo:
            request["MessageGroupId"] = (envelope.client_id if envelope else "") or _DEFAULT_GROUP
            request["MessageDeduplicationId"] = _deduplication_id(message, envelope)
        await self._sqs("send_message", url, size=total, **request)
        logger.debug("sqs sent %d bytes to %s", len(body), url)

    async def receive(self) -> SqsDelivery:
        """The next message from ``receive_queue``, long-polling for it.

        Raises:
            ConnectionClosed: this end is closed (also wakes a pending receive), or the
                queue is gone.
            InvalidMessage / MessageTooLarge: one undecodable message; it stays in the
                queue for redrive to the dead-letter queue, and the transport keeps working.
            BusTimeout: SQS did not answer a poll in time.
        """
        self._check_open()
        if self._receive_url is None:
            raise ConnectionClosed("this SQS transport has no receive queue")
        while not self._buffer:
            try:
                await self._wait_for_batch()
            except QueueMissing as exc:
                await self._recreate_receive_queue(exc)
            self._check_open()
        return self._delivery(self._buffer.popleft(), self._receive_url)

    async def _recreate_receive_queue(self, missing: QueueMissing) -> None:
        # Our own queue is gone (deleted, or an endpoint that lost its state): made again,
        # so this end recovers instead of failing every poll from now on.
        self._check_open()
        name = self.config.receive_queue or ""
        if name in self.config.queue_urls:
            raise missing  # not ours to create
        logger.warning("%s: creating it again", missing)
        self._urls.clear()  # every cached URL may be stale: looked up again when used
        self._receive_url = await self.ensure_queue(name)

    # -- visibility, queues, lag ---------------------------------------------------------

    async def extend(self, delivery: SqsDelivery, seconds: int) -> None:
        """Hide ``delivery`` for ``seconds`` more from now (0 makes it visible at once).

        Raises:
            TransportError: the receipt handle is no longer valid (message deleted or
                received again elsewhere) or SQS refused.
        """
        self._check_open()
        url = delivery.queue_url
        await self._sqs(
            "change_message_visibility",
            url,
            QueueUrl=url,
            ReceiptHandle=delivery.receipt_handle,
            VisibilityTimeout=seconds,
        )

    def keep_visible(self, delivery: SqsDelivery) -> None:
        """Keep extending ``delivery``'s visibility until it is acked, nacked or closed."""
        if delivery._keeper is None and not delivery._settled:
            delivery._keeper = asyncio.create_task(self._keep_extending(delivery))
            self._keepers.add(delivery._keeper)
            delivery._keeper.add_done_callback(self._keepers.discard)

    async def ensure_queue(self, name: str, *, owner: bool = True) -> str:
        """Create queue ``name`` and its dead-letter queue if missing; return its URL.

        Idempotent. The owner (the end that receives from it) also applies its visibility
        timeout and redrive policy to a queue that exists with other values, e.g. one a
        sender created first; a non-owner uses an existing queue as it is.

        Raises:
            ConnectionClosed / TransportError / BusTimeout: SQS refused or did not answer.
        """
        self._check_open(started_only=True)
        cfg = self.config
        if (existing := cfg.queue_urls.get(name)) is not None:
            return existing  # the operator's queue, as it is
        full = cfg.full_name(name)
        if not owner:
            with contextlib.suppress(ConnectionClosed):
                return await self._queue_url(full)
        fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if cfg.fifo else {}
        dlq_url, _ = await self._create_queue(
            cfg.full_name(name, dead_letter=True), {"MessageRetentionPeriod": "1209600", **fifo}
        )
        arn_reply = await self._sqs(
            "get_queue_attributes", dlq_url, QueueUrl=dlq_url, AttributeNames=["QueueArn"]
        )
        redrive = {
            "deadLetterTargetArn": arn_reply["Attributes"]["QueueArn"],
            "maxReceiveCount": str(cfg.max_receive_count),
        }
        mutable = {
            "VisibilityTimeout": str(cfg.visibility_timeout_s),
            "RedrivePolicy": json.dumps(redrive),
            **cfg.retention_attributes,
        }
        url, created = await self._create_queue(full, mutable | fifo)
        if not created and owner:
            await self._sqs("set_queue_attributes", full, QueueUrl=url, Attributes=mutable)
            logger.info("sqs queue %s existed; applied this receiver's attributes", full)
        return url

    async def delete_queue(self, name: str, *, with_dead_letter: bool = True) -> None:
        """Delete queue ``name`` (and its dead-letter queue); a missing queue is fine.

        Raises:
            TransportError / BusTimeout: SQS refused or did not answer.
        """
        self._check_open(started_only=True)
        names = [self.config.full_name(name)]
        if with_dead_letter:
            names.append(self.config.full_name(name, dead_letter=True))
        for full in names:
            try:
                url = await self._queue_url(full)
                await self._sqs("delete_queue", full, QueueUrl=url)
            except ConnectionClosed:
                logger.debug("sqs queue %s was already gone", full)
            self._urls.pop(full, None)

    async def queue_depth(self, name: str | None = None, *, dead_letter: bool = False) -> int:
        """Lag of a queue (default: the receive queue): visible plus in-flight messages.

        Both counts are SQS's approximations (eventually consistent, about a minute on AWS).

        Raises:
            ConnectionClosed: the queue does not exist.
            TransportError / BusTimeout: SQS refused or did not answer.
        """
        self._check_open(started_only=True)
        base = name or self.config.receive_queue
        if base is None:
            raise ValueError("no queue named and no receive queue configured")
        full, known = self.config.full_name(base, dead_letter=dead_letter), self.config.queue_urls
        url = (None if dead_letter else known.get(base)) or await self._queue_url(full)
        counts = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        reply = await self._sqs("get_queue_attributes", url, QueueUrl=url, AttributeNames=counts)
        return sum(int(reply["Attributes"][count]) for count in counts)

    # -- internals -------------------------------------------------------------------------

    def _check_open(self, *, started_only: bool = False) -> None:
        # started_only: queue management and acks still work while close() runs.
        if self._client is None:
            raise ConnectionClosed("SQS transport is not started, or is closed")
        if self._closed and not started_only:
            raise ConnectionClosed("SQS transport is closed")

    async def _sqs(
        self, action: str, queue: str, *, size: int = 0, wait_s: int = 0, **request: Any
    ) -> Any:
        """Call the client's ``action`` method, bounded, with errors translated."""
        timeout_s = self.config.request_timeout_s + wait_s
        return await call_sqs(
            self._client, action, queue, timeout_s=timeout_s, size=size, **request
        )

    async def _create_queue(self, full: str, attributes: dict[str, str]) -> tuple[str, bool]:
        """The queue's URL, and whether it now has ``attributes`` (False: it existed with
        other values, which SQS reports as an error rather than changing them)."""
        try:
            reply = await self._sqs("create_queue", full, QueueName=full, Attributes=attributes)
        except TransportError as exc:
            cause = exc.__cause__
            if not isinstance(cause, ClientError):
                raise
            if cause.response.get("Error", {}).get("Code") not in _QUEUE_EXISTS_CODES:
                raise
            return await self._queue_url(full), False
        url: str = reply["QueueUrl"]
        self._urls[full] = url
        return url, True

    async def _queue_url(self, full: str) -> str:
        url = self._urls.get(full)
        if url is None:
            reply = await self._sqs("get_queue_url", full, QueueName=full)
            url = str(reply["QueueUrl"])
            self._urls[full] = url
        return url

    async def _reply_url(self, envelope: Envelope | None) -> str:
        target = envelope.reply_to if envelope is not None else None
        if not target:
            raise ConnectionClosed("no send queue configured and the envelope has no reply_to")
        return await self._url_of(target)

    async def _url_of(self, queue: str) -> str:
        if queue.startswith(("https://", "http://")):
            return queue
        return await self._queue_url(queue)

    async def _wait_for_batch(self) -> None:
        # One poll at a time, shared by every waiting receive; it is shielded so a caller
        # that gives up does not abandon messages SQS already made invisible: they land
        # in the buffer for the next receive. Only close() cancels the poll.
        if self._poll is None:
            self._poll = asyncio.create_task(self._poll_once())
            self._poll.add_done_callback(_retrieve_exception)
        poll = self._poll
        try:
            await asyncio.shield(poll)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and task is not None and not task.cancelling():
                raise ConnectionClosed("SQS transport is closed") from None
            raise
        finally:
            if self._poll is poll and poll.done():
                self._poll = None

    async def _poll_once(self) -> None:
        cfg = self.config
        assert self._receive_url is not None
        reply = await self._sqs(
            "receive_message",
            self._receive_url,
            wait_s=cfg.wait_time_seconds,
            QueueUrl=self._receive_url,
            MaxNumberOfMessages=cfg.max_number_of_messages,
            WaitTimeSeconds=cfg.wait_time_seconds,
            # Per call, so this receiver's timeout holds whoever created the queue.
            VisibilityTimeout=cfg.visibility_timeout_s,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        messages: list[dict[str, Any]] = reply.get("Messages", [])
        self._buffer.extend(messages)
        logger.debug("sqs received a batch of %d from %s", len(messages), self._receive_url)

    def _delivery(self, raw: dict[str, Any], queue_url: str) -> SqsDelivery:
        data = str(raw["Body"]).encode("utf-8", "surrogatepass")
        receive_count = int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "0"))
        try:
            message = decode_message(data, self._limits)
            envelope = _envelope_from_attributes(raw.get("MessageAttributes", {}))
        except (InvalidMessage, MessageTooLarge) as exc:
            # Left un-deleted on purpose: redrive moves it to the dead-letter queue after
            # max_receive_count receives, keeping the evidence without a second code path.
            logger.warning(
                "sqs message %s on %s is undecodable (receive %d of %d): %s",
                raw.get("MessageId"),
                queue_url,
                receive_count,
                self.config.max_receive_count,
                exc,
            )
            raise
        delivery = SqsDelivery(
            message=message,
            envelope=envelope,
            size_bytes=len(data),
            queue_url=queue_url,
            receipt_handle=str(raw["ReceiptHandle"]),
            message_id=str(raw.get("MessageId", "")),
            receive_count=receive_count,
        )
        delivery._ack = lambda: self._settle(delivery, delete=True)
        delivery._nack = lambda: self._settle(delivery, delete=False)
        if self.config.keep_visible:
            self.keep_visible(delivery)
        return delivery

    async def _settle(self, delivery: SqsDelivery, *, delete: bool) -> None:
        if delivery._settled:
            return
        delivery._settled = True
        if delivery._keeper is not None:
            delivery._keeper.cancel()
        if delete:
            self._check_open(started_only=True)
            url = delivery.queue_url
            await self._sqs(
                "delete_message", url, QueueUrl=url, ReceiptHandle=delivery.receipt_handle
            )
        else:
            await self.extend(delivery, 0)

    async def _keep_extending(self, delivery: SqsDelivery) -> None:
        timeout_s = self.config.visibility_timeout_s
        # Extend at a third of the timeout: two extensions can fail or be slow before the
        # message becomes visible to another consumer.
        interval_s = timeout_s / 3
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.config.max_keep_visible_s
        while loop.time() + interval_s < give_up_at:
            await asyncio.sleep(interval_s)
            try:
                await self.extend(delivery, timeout_s)
            except (TransportError, BusTimeout) as exc:
                logger.warning("sqs could not extend %s: %s", delivery.message_id, exc)
                return
        logger.warning(
            "sqs stopped extending %s after max_keep_visible_s=%.0f",
            delivery.message_id,
            self.config.max_keep_visible_s,
        )

    async def _release_buffered(self) -> None:
        # Buffered messages were never handed out: make them visible now rather than
        # leaving them hidden for a full visibility timeout.
        pending = list(self._buffer)
        self._buffer.clear()
        url = self._receive_url
        while pending and url is not None:
            chunk, pending = pending[:10], pending[10:]
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(chunk)
            ]
            try:
                await self._sqs(
                    "change_message_visibility_batch", url, QueueUrl=url, Entries=entries
                )
            except (TransportError, BusTimeout) as exc:
                logger.warning("sqs could not release %d buffered messages: %s", len(chunk), exc)


def _retrieve_exception(task: asyncio.Task[None]) -> None:
    # The poll's error reaches every waiting receive; with none waiting, it is only logged.
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.debug("sqs poll failed: %s", exc)
