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
import hashlib
import json
import logging
import re
import uuid
from collections import deque
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from transports.base import Delivery, TransportBase, TransportCapabilities, TransportType
from transports.codec import DEFAULT_MAX_DEPTH, DecodeLimits, decode_message, encode_message
from transports.envelope import Envelope
from transports.errors import (
    BusTimeout,
    ConnectionClosed,
    InvalidMessage,
    InvalidRequest,
    MessageTooLarge,
    TransportError,
)
from transports.message import Notification, TransportMessage

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

T = TypeVar("T")

# The classic SQS cap on body plus message attributes (names, types and values).
SQS_MAX_MESSAGE_BYTES = 256 * 1024
# One String attribute carries the whole envelope: SQS allows only 10 attributes and no
# empty values, and an envelope can exceed both; trace context is repeated on its own
# (the OpenTelemetry SQS convention) so tracing tools can read it without our format.
ENVELOPE_ATTRIBUTE = "raybus-envelope"
_TRACE_ATTRIBUTES = ("traceparent", "tracestate")
_DEFAULT_GROUP = "raybus"
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_FIFO_SUFFIX = ".fifo"
_DLQ_SUFFIX = "-dlq"
# Characters JSON may carry raw but SQS refuses in a body (only XML 1.0 characters pass).
_XML_NONCHARACTERS = (b"\xef\xbf\xbe", b"\xef\xbf\xbf")

_MISSING_QUEUE_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.QueueDeletedRecently",
        "QueueDeletedRecently",
    }
)
_QUEUE_EXISTS_CODES = frozenset(
    {"QueueAlreadyExists", "QueueNameExists", "AWS.SimpleQueueService.QueueNameExists"}
)
_UNAVAILABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "RequestThrottled",
        "OverLimit",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "KmsThrottled",
    }
)


class SqsConfig(BaseModel):
    """Where the queues are and how they are polled; built once at the process edge.

    Queue names are given without ``queue_prefix`` and without ``.fifo``; the transport
    adds both (:meth:`full_name`). Dead-letter queues are named ``<queue>-dlq``.

    Attributes:
        endpoint_url: the SQS endpoint; None = AWS's for ``region``.
        region: the AWS region.
        queue_prefix: prepended to every queue name (isolates deployments and tests).
        send_queue: where :meth:`SqsTransport.send` writes; None = each envelope's
            ``reply_to`` (a worker answering per-client response queues).
        receive_queue: the queue :meth:`SqsTransport.receive` long-polls; None = send-only.
        fifo: use FIFO queues: ordered per client, deduplicated by request key.
        wait_time_seconds: long-poll wait (0-20). A poll returns as soon as a message
            arrives, so this bounds idle traffic, not latency; 5 s keeps an idle consumer
            at 12 requests a minute and lets a dead connection surface quickly. Use 20
            when idle cost matters.
        max_number_of_messages: batch size of one receive (1-10); the rest is buffered and
            handed out one per ``receive`` call. Buffered messages are already in flight,
            so a slow consumer should use a small batch.
        visibility_timeout_s: how long a received message stays hidden before SQS hands it
            out again; set on the queues this transport creates.
        max_receive_count: receives before redrive moves a message to the dead-letter queue.
        max_message_bytes: largest body sent or accepted (at most SQS's 256 KiB).
        max_depth: JSON nesting bound for decoding.
        keep_visible: extend each delivery's visibility until it is acked or nacked.
        max_keep_visible_s: stop extending after this long, so a hung consumer cannot hold
            a message forever.
        delete_receive_queue_on_close: remove the receive queue and its dead-letter queue
            on close (a client's own response queue).
        request_timeout_s: bound on each SQS call (a long poll gets its wait on top).
        aws_access_key_id / aws_secret_access_key / aws_session_token: explicit
            credentials; None = the standard AWS credential chain.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint_url: str | None = None
    region: str = "us-east-1"
    queue_prefix: str = ""
    send_queue: str | None = None
    receive_queue: str | None = None
    fifo: bool = False
    wait_time_seconds: int = Field(default=5, ge=0, le=20)
    max_number_of_messages: int = Field(default=10, ge=1, le=10)
    visibility_timeout_s: int = Field(default=30, ge=1, le=43_200)
    max_receive_count: int = Field(default=5, ge=1, le=1000)
    max_message_bytes: int = Field(default=SQS_MAX_MESSAGE_BYTES, ge=1, le=SQS_MAX_MESSAGE_BYTES)
    max_depth: int = Field(default=DEFAULT_MAX_DEPTH, ge=1)
    keep_visible: bool = True
    max_keep_visible_s: float = Field(default=3600.0, gt=0)
    delete_receive_queue_on_close: bool = False
    request_timeout_s: float = Field(default=10.0, gt=0)
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None

    @model_validator(mode="after")
    def _names_are_valid(self) -> Self:
        for name in (self.send_queue, self.receive_queue):
            if name is not None:
                self.full_name(name, dead_letter=True)
        return self

    def full_name(self, name: str, *, dead_letter: bool = False) -> str:
        """The SQS queue name for ``name``: prefix, name, ``-dlq`` if asked, ``.fifo``.

        Raises:
            ValueError: the result is not a valid SQS queue name.
        """
        base = f"{self.queue_prefix}{name}{_DLQ_SUFFIX if dead_letter else ''}"
        if not _QUEUE_NAME.match(base) or len(base) + (len(_FIFO_SUFFIX) if self.fifo else 0) > 80:
            raise ValueError(f"{base!r} is not a valid SQS queue name (A-Z a-z 0-9 - _, <= 80)")
        return base + (_FIFO_SUFFIX if self.fifo else "")


def response_queue_name(client_id: str, *, max_chars: int = 60) -> str:
    """A queue name (before prefix) for ``client_id``'s responses, valid for any id.

    Unsafe characters become ``-``; a long id is cut and suffixed with a hash so two
    clients never share a queue.
    """
    safe = _NAME_UNSAFE.sub("-", client_id) or "client"
    if safe != client_id or len(safe) > max_chars:
        digest = hashlib.sha256(client_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        safe = f"{safe[: max_chars - 13]}-{digest}"
    return f"responses-{safe}"


def translate_client_error(
    exc: Exception, *, operation: str, queue: str, size_bytes: int = 0
) -> TransportError:
    """Map a botocore error from ``operation`` on ``queue`` to our error tree.

    Args:
        exc: a botocore ``ClientError`` or ``BotoCoreError`` (or an ``OSError``).
        operation: the SQS action, for the message.
        queue: the queue name or URL, for the message.
        size_bytes: the size of the message being sent, for ``MessageTooLarge``.
    """
    if not isinstance(exc, ClientError):
        return ConnectionClosed(f"SQS {operation} on {queue} failed: {exc}")
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    detail = str(error.get("Message", ""))
    if code in _MISSING_QUEUE_CODES:
        return ConnectionClosed(f"SQS queue {queue} does not exist")
    if code in ("MessageTooLong", "AWS.SimpleQueueService.MessageTooLong") or (
        code == "InvalidParameterValue" and "too long" in detail.lower()
    ):
        return MessageTooLarge(size_bytes, SQS_MAX_MESSAGE_BYTES)
    if code in _UNAVAILABLE_CODES:
        return ConnectionClosed(f"SQS {operation} on {queue} unavailable: {code} {detail}")
    return TransportError(f"SQS {operation} on {queue} failed: {code} {detail}")


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
        session = aioboto3.Session(
            aws_access_key_id=_secret(cfg.aws_access_key_id),
            aws_secret_access_key=_secret(cfg.aws_secret_access_key),
            aws_session_token=_secret(cfg.aws_session_token),
            region_name=cfg.region,
        )
        read_timeout = cfg.request_timeout_s + cfg.wait_time_seconds
        botocore_config = Config(
            connect_timeout=cfg.request_timeout_s,
            read_timeout=read_timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=32,
        )
        self._stack = AsyncExitStack()
        try:
            self._client = await self._stack.enter_async_context(
                session.client("sqs", endpoint_url=cfg.endpoint_url, config=botocore_config)
            )
            if cfg.receive_queue is not None:
                self._receive_url = await self.ensure_queue(cfg.receive_queue)
            if cfg.send_queue is not None:
                self._send_url = await self.ensure_queue(cfg.send_queue)
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
        self._check_open()
        body = _encode_body(message)
        if len(body) > self.config.max_message_bytes:
            raise MessageTooLarge(len(body), self.config.max_message_bytes)
        attributes = _envelope_attributes(envelope)
        total = len(body) + _attributes_size(attributes)
        if total > SQS_MAX_MESSAGE_BYTES:
            raise MessageTooLarge(total, SQS_MAX_MESSAGE_BYTES)
        url = self._send_url or await self._reply_url(envelope)
        request: dict[str, Any] = {"QueueUrl": url, "MessageBody": body.decode("utf-8")}
        if attributes:
            request["MessageAttributes"] = attributes
        if self.config.fifo:
            request["MessageGroupId"] = (envelope.client_id if envelope else "") or _DEFAULT_GROUP
            request["MessageDeduplicationId"] = _deduplication_id(message, envelope)
        await self._call("SendMessage", url, self._client.send_message(**request), size=total)
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
            await self._wait_for_batch()
            self._check_open()
        return self._delivery(self._buffer.popleft(), self._receive_url)

    # -- visibility, queues, lag ---------------------------------------------------------

    async def extend(self, delivery: SqsDelivery, seconds: int) -> None:
        """Hide ``delivery`` for ``seconds`` more from now (0 makes it visible at once).

        Raises:
            TransportError: the receipt handle is no longer valid (message deleted or
                received again elsewhere) or SQS refused.
        """
        self._check_open()
        await self._call(
            "ChangeMessageVisibility",
            delivery.queue_url,
            self._client.change_message_visibility(
                QueueUrl=delivery.queue_url,
                ReceiptHandle=delivery.receipt_handle,
                VisibilityTimeout=seconds,
            ),
        )

    def keep_visible(self, delivery: SqsDelivery) -> None:
        """Keep extending ``delivery``'s visibility until it is acked, nacked or closed."""
        if delivery._keeper is None and not delivery._settled:
            delivery._keeper = asyncio.create_task(self._keep_extending(delivery))
            self._keepers.add(delivery._keeper)
            delivery._keeper.add_done_callback(self._keepers.discard)

    async def ensure_queue(self, name: str) -> str:
        """Create queue ``name`` and its dead-letter queue if missing; return its URL.

        Idempotent. A queue that exists with other attributes is used as it is.

        Raises:
            ConnectionClosed / TransportError / BusTimeout: SQS refused or did not answer.
        """
        self._check_open(started_only=True)
        cfg = self.config
        full = cfg.full_name(name)
        fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if cfg.fifo else {}
        dlq_url = await self._create_queue(
            cfg.full_name(name, dead_letter=True), {"MessageRetentionPeriod": "1209600", **fifo}
        )
        arn_reply = await self._call(
            "GetQueueAttributes",
            dlq_url,
            self._client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"]),
        )
        redrive = {
            "deadLetterTargetArn": arn_reply["Attributes"]["QueueArn"],
            "maxReceiveCount": str(cfg.max_receive_count),
        }
        url = await self._create_queue(
            full,
            {
                "VisibilityTimeout": str(cfg.visibility_timeout_s),
                "RedrivePolicy": json.dumps(redrive),
                **fifo,
            },
        )
        self._urls[full] = url
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
                await self._call("DeleteQueue", full, self._client.delete_queue(QueueUrl=url))
            except ConnectionClosed:
                logger.debug("sqs queue %s was already gone", full)
            self._urls.pop(full, None)

    def dead_letter_queue_name(self, name: str | None = None) -> str:
        """The full name of the dead-letter queue of ``name`` (default: receive queue)."""
        base = name or self.config.receive_queue
        if base is None:
            raise ValueError("no queue named and no receive queue configured")
        return self.config.full_name(base, dead_letter=True)

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
        url = await self._queue_url(self.config.full_name(base, dead_letter=dead_letter))
        reply = await self._call(
            "GetQueueAttributes",
            url,
            self._client.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            ),
        )
        attributes = reply["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    # -- internals -------------------------------------------------------------------------

    def _check_open(self, *, started_only: bool = False) -> None:
        # started_only: queue management and acks still work while close() runs.
        if self._client is None:
            raise ConnectionClosed("SQS transport is not started, or is closed")
        if self._closed and not started_only:
            raise ConnectionClosed("SQS transport is closed")

    async def _call(
        self, operation: str, queue: str, call: Awaitable[T], *, size: int = 0, wait_s: int = 0
    ) -> T:
        timeout_s = self.config.request_timeout_s + wait_s
        try:
            async with asyncio.timeout(timeout_s):
                return await call
        except (ClientError, BotoCoreError, OSError) as exc:
            raise translate_client_error(
                exc, operation=operation, queue=queue, size_bytes=size
            ) from exc
        except TimeoutError:
            raise BusTimeout(f"SQS {operation} on {queue}", timeout_s) from None

    async def _create_queue(self, full: str, attributes: dict[str, str]) -> str:
        try:
            reply = await self._call(
                "CreateQueue",
                full,
                self._client.create_queue(QueueName=full, Attributes=attributes),
            )
        except TransportError as exc:
            cause = exc.__cause__
            if not isinstance(cause, ClientError):
                raise
            if cause.response.get("Error", {}).get("Code") not in _QUEUE_EXISTS_CODES:
                raise
            logger.info("sqs queue %s exists with other attributes; using it as it is", full)
            return await self._queue_url(full)
        url: str = reply["QueueUrl"]
        self._urls[full] = url
        return url

    async def _queue_url(self, full: str) -> str:
        url = self._urls.get(full)
        if url is None:
            reply = await self._call(
                "GetQueueUrl", full, self._client.get_queue_url(QueueName=full)
            )
            url = str(reply["QueueUrl"])
            self._urls[full] = url
        return url

    async def _reply_url(self, envelope: Envelope | None) -> str:
        target = envelope.reply_to if envelope is not None else None
        if not target:
            raise ConnectionClosed("no send queue configured and the envelope has no reply_to")
        if target.startswith(("https://", "http://")):
            return target
        return await self._queue_url(target)

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
        reply = await self._call(
            "ReceiveMessage",
            self._receive_url,
            self._client.receive_message(
                QueueUrl=self._receive_url,
                MaxNumberOfMessages=cfg.max_number_of_messages,
                WaitTimeSeconds=cfg.wait_time_seconds,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            ),
            wait_s=cfg.wait_time_seconds,
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
            await self._call(
                "DeleteMessage",
                delivery.queue_url,
                self._client.delete_message(
                    QueueUrl=delivery.queue_url, ReceiptHandle=delivery.receipt_handle
                ),
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
                await self._call(
                    "ChangeMessageVisibilityBatch",
                    url,
                    self._client.change_message_visibility_batch(QueueUrl=url, Entries=entries),
                )
            except (TransportError, BusTimeout) as exc:
                logger.warning("sqs could not release %d buffered messages: %s", len(chunk), exc)


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def _retrieve_exception(task: asyncio.Task[None]) -> None:
    # The poll's error reaches every waiting receive; with none waiting, it is only logged.
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.debug("sqs poll failed: %s", exc)


def _encode_body(message: TransportMessage) -> bytes:
    body = encode_message(message)
    if any(bad in body for bad in _XML_NONCHARACTERS):
        # Same JSON value, with U+FFFE/U+FFFF escaped: SQS refuses them raw.
        return json.dumps(
            message.to_json_dict(), ensure_ascii=True, allow_nan=False, separators=(",", ":")
        ).encode("ascii")
    return body


def _envelope_attributes(envelope: Envelope | None) -> dict[str, dict[str, str]]:
    if envelope is None:
        return {}
    headers = envelope.to_headers()
    attributes = {
        ENVELOPE_ATTRIBUTE: {
            "DataType": "String",
            "StringValue": json.dumps(headers, ensure_ascii=False, separators=(",", ":")),
        }
    }
    for name in _TRACE_ATTRIBUTES:
        if headers.get(name):
            attributes[name] = {"DataType": "String", "StringValue": headers[name]}
    return attributes


def _attributes_size(attributes: dict[str, dict[str, str]]) -> int:
    # SQS counts each attribute's name, data type and value toward the message size.
    return sum(
        len(name.encode()) + len(value["DataType"]) + len(value["StringValue"].encode())
        for name, value in attributes.items()
    )


def _envelope_from_attributes(attributes: dict[str, Any]) -> Envelope | None:
    packed = attributes.get(ENVELOPE_ATTRIBUTE)
    if packed is None:
        return None
    try:
        headers = json.loads(packed.get("StringValue", ""))
    except (ValueError, AttributeError):
        raise InvalidRequest(f"the {ENVELOPE_ATTRIBUTE} attribute is not JSON") from None
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InvalidRequest(f"the {ENVELOPE_ATTRIBUTE} attribute is not an object of strings")
    return Envelope.from_headers(headers)


def _deduplication_id(message: TransportMessage, envelope: Envelope | None) -> str:
    # A request and its response are each sent once per request key; a resend of either
    # within SQS's five-minute window is dropped. Notifications (progress, ...) share
    # their request's key, so each is unique.
    if isinstance(message, Notification) or envelope is None or not envelope.request_id:
        return uuid.uuid4().hex
    key = "\0".join((type(message).__name__, *envelope.correlation_key))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
