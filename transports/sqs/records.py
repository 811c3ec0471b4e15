"""Raw SQS messages for event triggers: read with their visibility kept, deleted when acked.

:class:`SqsRecordSource` receives one message per :meth:`~SqsRecordSource.receive` (so
nothing is taken for nobody: a trigger receives only when it has a free slot), keeps it
invisible to other consumers while it is in hand (extending its visibility every third
of the timeout), and deletes it on ``ack``. A message not acked (the reader died or
closed) becomes visible again: at least once. Message attributes are the record's
headers; ``SentTimestamp`` its timestamp; a FIFO message's group id its key.

:class:`SqsRecordWriter` sends bodies as text. SQS allows 10 attributes: headers named
``raybus-*`` travel together as JSON in one attribute, ``raybus-trigger``; the others as
String attributes while they fit (beyond 9, or empty, they join that JSON under
``headers``). A value that is not UTF-8 text goes as base64 (``"raybus-encoding":
"base64"`` in that JSON), an empty one as ``-`` (``"empty"``), a Kafka key as
``raybus-key``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from contextlib import AsyncExitStack
from typing import Any

import aioboto3

from transports.errors import BusTimeout, ConnectionClosed, MessageTooLarge, TransportError
from transports.raw_records import RawRecord, RecordDelivery
from transports.sqs.wire import (
    SQS_MAX_MESSAGE_BYTES,
    QueueMissing,
    SqsConfig,
    botocore_config,
    call_sqs,
)

__all__ = ["SqsRecordSource", "SqsRecordWriter"]

logger = logging.getLogger(__name__)

TRIGGER_ATTRIBUTE = "raybus-trigger"
_MAX_ATTRIBUTES = 10
_MAX_MESSAGES = 10  # per receive_message request (an SQS limit)
_COUNTS = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]


class _Sqs:
    """One SQS client; every call bounded, its errors translated (as SqsTransport's)."""

    def __init__(self, config: SqsConfig) -> None:
        self.config = config
        self._stack: AsyncExitStack | None = None
        self._client: Any = None  # aiobotocore's client: untyped, the raw edge

    async def open(self) -> None:
        cfg = self.config
        session = aioboto3.Session(**cfg.session_options())
        botocore_settings = botocore_config(cfg)
        self._stack = AsyncExitStack()
        self._client = await self._stack.enter_async_context(
            session.client("sqs", endpoint_url=cfg.endpoint_url, config=botocore_settings)
        )

    async def call(
        self, action: str, queue: str, *, size: int = 0, wait_s: int = 0, **request: Any
    ) -> Any:
        if self._client is None:
            raise ConnectionClosed("the SQS client is closed or not started")
        timeout_s = self.config.request_timeout_s + wait_s
        return await call_sqs(
            self._client, action, queue, timeout_s=timeout_s, size=size, **request
        )

    async def url_of(self, name: str, *, create: bool) -> str:
        """A queue's URL by name; ``create``: made (standard, defaults) if missing."""
        if create:
            reply = await self.call("create_queue", name, QueueName=name)
        else:
            reply = await self.call("get_queue_url", name, QueueName=name)
        return str(reply["QueueUrl"])

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()


class SqsRecordSource:
    """Messages of one queue (by name on the endpoint, or by URL); ``await start()``."""

    def __init__(self, config: SqsConfig, queue: str, queue_url: str | None = None) -> None:
        self._sqs = _Sqs(config)
        self._queue = queue
        self._url = queue_url
        self._held: dict[str, asyncio.Task[None]] = {}  # receipt handle -> its keeper
        self._closed = False

    async def start(self) -> None:
        """Raises: QueueMissing (the queue does not exist), ConnectionClosed, BusTimeout."""
        await self._sqs.open()
        try:
            if self._url is None:
                self._url = await self._sqs.url_of(self._queue, create=False)
        except QueueMissing:
            await self._sqs.close()
            raise QueueMissing(f"SQS queue {self._queue!r} does not exist") from None
        except BaseException:
            await self._sqs.close()
            raise

    async def receive(self, limit: int = 1) -> list[RecordDelivery]:
        """The next messages, at least one and at most ``limit`` (SQS: 10), long-polling."""
        cfg = self._sqs.config
        while True:
            if self._closed or self._url is None:
                raise ConnectionClosed("the record source is closed or not started")
            reply = await self._sqs.call(
                "receive_message",
                self._queue,
                wait_s=cfg.wait_time_seconds,
                QueueUrl=self._url,
                MaxNumberOfMessages=max(1, min(limit, _MAX_MESSAGES)),
                WaitTimeSeconds=cfg.wait_time_seconds,
                VisibilityTimeout=cfg.visibility_timeout_s,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["SentTimestamp", "MessageGroupId"],
            )
            messages = reply.get("Messages", [])
            if messages:
                return [self._delivery(message) for message in messages]

    def _delivery(self, message: dict[str, Any]) -> RecordDelivery:
        system = message.get("Attributes", {})
        headers = tuple(
            (name, _attribute_bytes(value))
            for name, value in (message.get("MessageAttributes") or {}).items()
        )
        group = system.get("MessageGroupId")
        sent = system.get("SentTimestamp")
        record = RawRecord(
            topic=self._queue,
            partition=0,
            offset=0,
            timestamp_ms=int(sent) if sent else None,
            key=group.encode("utf-8") if group else None,
            value=str(message.get("Body", "")).encode("utf-8", "surrogatepass"),
            headers=headers,
            message_id=str(message["MessageId"]),
        )
        handle = str(message["ReceiptHandle"])
        self._held[handle] = asyncio.get_running_loop().create_task(self._keep_hidden(handle))

        async def ack() -> None:
            keeper = self._held.pop(handle, None)
            if keeper is None:
                return  # acked already, or released by close
            keeper.cancel()
            await self._sqs.call(
                "delete_message", self._queue, QueueUrl=self._url, ReceiptHandle=handle
            )

        return RecordDelivery(record, ack)

    async def _keep_hidden(self, handle: str) -> None:
        cfg = self._sqs.config
        interval_s = cfg.visibility_timeout_s / 3  # two extensions may fail before it shows
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + cfg.max_keep_visible_s
        while loop.time() + interval_s < give_up_at:
            await asyncio.sleep(interval_s)  # pacing of the extensions
            try:
                await self._sqs.call(
                    "change_message_visibility",
                    self._queue,
                    QueueUrl=self._url,
                    ReceiptHandle=handle,
                    VisibilityTimeout=cfg.visibility_timeout_s,
                )
            except (TransportError, BusTimeout) as exc:
                logger.warning(
                    "trigger source %s: could not extend a message: %s", self._queue, exc
                )

    async def lag(self) -> int:
        """Messages in the queue: visible plus in flight (SQS's approximations)."""
        reply = await self._sqs.call(
            "get_queue_attributes", self._queue, QueueUrl=self._url, AttributeNames=_COUNTS
        )
        return sum(int(reply["Attributes"][count]) for count in _COUNTS)

    async def close(self) -> None:
        """Messages still in hand become visible again at once (delivered again)."""
        if self._closed:
            return
        self._closed = True
        held, self._held = dict(self._held), {}
        for handle, keeper in held.items():
            keeper.cancel()
            with contextlib.suppress(TransportError, BusTimeout):
                await self._sqs.call(
                    "change_message_visibility",
                    self._queue,
                    QueueUrl=self._url,
                    ReceiptHandle=handle,
                    VisibilityTimeout=0,
                )
        await self._sqs.close()


class SqsRecordWriter:
    """Sends messages to queues of one endpoint; ``await start()``, then :meth:`write`."""

    def __init__(self, config: SqsConfig, queues: dict[str, str | None]) -> None:
        self._sqs = _Sqs(config)
        self._queues = queues  # name -> URL (None: by name, created if missing)
        self._urls: dict[str, str] = {}

    async def start(self) -> None:
        """Find (or create) every queue. Raises: ConnectionClosed, BusTimeout, TransportError."""
        await self._sqs.open()
        try:
            for name, url in self._queues.items():
                self._urls[name] = url or await self._sqs.url_of(name, create=True)
        except BaseException:
            await self._sqs.close()
            raise

    async def write(
        self, queue: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Returns once SQS has the message.

        Raises:
            MessageTooLarge: over SQS's 256 KiB with its attributes: never sent.
            ConnectionClosed / TransportError / BusTimeout: not sent, or not confirmed.
        """
        body, attributes = _message(key, value, headers)
        size = len(body.encode("utf-8"))
        size += sum(len(name) + len(a["StringValue"].encode()) for name, a in attributes.items())
        if size > SQS_MAX_MESSAGE_BYTES:
            raise MessageTooLarge(size, SQS_MAX_MESSAGE_BYTES)
        request: dict[str, Any] = {"QueueUrl": self._urls[queue], "MessageBody": body}
        if attributes:
            request["MessageAttributes"] = attributes
        await self._sqs.call("send_message", queue, size=size, **request)

    async def close(self) -> None:
        await self._sqs.close()


def _xml_text(text: str) -> bool:
    """Does SQS take ``text`` as a body? (XML 1.0 characters only: no control characters
    but tab, LF and CR, no U+FFFE or U+FFFF.) One linear scan."""
    return not any((c < " " and c not in "\t\n\r") or c in "\ufffe\uffff" for c in text)


def _attribute_bytes(attribute: dict[str, Any]) -> bytes:
    if "BinaryValue" in attribute:
        return bytes(attribute["BinaryValue"])
    return str(attribute.get("StringValue", "")).encode("utf-8")


def _message(
    key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
) -> tuple[str, dict[str, dict[str, str]]]:
    """The body text and message attributes of one record (see the module docstring)."""
    ours: dict[str, Any] = {}
    others: list[tuple[str, str]] = []
    for name, raw in headers:
        text = raw.decode("utf-8", errors="replace")
        if name.startswith("raybus-"):
            ours[name] = text
        else:
            others.append((name, text))
    try:
        body = value.decode("utf-8")
    except UnicodeDecodeError:
        body = ""
    if not value:  # SQS refuses an empty body
        body, ours["raybus-encoding"] = "-", "empty"
    elif not body or not _xml_text(body):
        body, ours["raybus-encoding"] = base64.b64encode(value).decode("ascii"), "base64"
    if key is not None:
        ours["raybus-key"] = key.decode("utf-8", errors="replace")
    room = _MAX_ATTRIBUTES - (1 if ours else 0)
    attributes = {
        name: {"DataType": "String", "StringValue": text} for name, text in others if text
    }
    if len(attributes) > room or len(attributes) != len(others):
        ours["headers"] = dict(others)
        attributes = {}
    if ours:
        attributes[TRIGGER_ATTRIBUTE] = {"DataType": "String", "StringValue": json.dumps(ours)}
    return body, attributes
