"""What crosses the SQS wire for raybus: configuration, queue names, message attributes
and the translation of botocore errors into ours.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from typing import Any, Self

import aiohttp
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
)
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from transports.codec import DEFAULT_MAX_DEPTH, encode_message
from transports.envelope import Envelope
from transports.errors import (
    BusTimeout,
    ConnectionClosed,
    InvalidRequest,
    MessageTooLarge,
    TransportError,
)
from transports.message import Notification, TransportMessage

__all__ = [
    "ENVELOPE_ATTRIBUTE",
    "SQS_MAX_MESSAGE_BYTES",
    "QueueMissing",
    "SqsConfig",
    "botocore_config",
    "call_sqs",
    "may_have_reached_sqs",
    "response_queue_name",
    "translate_client_error",
]

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
# SQS turned the request away before doing anything: nothing it asked for happened.
_THROTTLED_CODES = frozenset(
    {"ThrottlingException", "RequestThrottled", "OverLimit", "KmsThrottled"}
)
# Worth another try; a throttle surely ran nothing, a failure inside SQS may have.
_UNAVAILABLE_CODES = _THROTTLED_CODES | {"ServiceUnavailable", "InternalError", "InternalFailure"}
# Botocore errors raised before a request left this process.
_NEVER_SENT_ERRORS = (ConnectTimeoutError, NoCredentialsError, ParamValidationError)
# Sending is not idempotent (a standard queue keeps both copies, so a repeated call would
# be queued twice): a send is retried only when its failure proves SQS never had it.
_SENDS = frozenset({"send_message", "send_message_batch"})
_ATTEMPTS = 3
_FIRST_BACKOFF_S = 0.05


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
        message_retention_s: the MessageRetentionPeriod (60..1209600) of the queues this
            transport owns; None = SQS's default (4 days).
        request_timeout_s: bound on each SQS call (a long poll gets its wait on top).
        aws_access_key_id / aws_secret_access_key / aws_session_token: explicit
            credentials; None = the standard AWS credential chain (environment, shared
            files, container or instance role), found and refreshed by botocore.
        aws_profile: the profile of the shared AWS files the chain reads; None = the
            default (or ``AWS_PROFILE``).
        queue_urls: existing queues, by name (without prefix): used as they are, never
            created, reconfigured or deleted (no ``sqs:CreateQueue`` needed for them).
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
    message_retention_s: int | None = Field(default=None, ge=60, le=1_209_600)
    request_timeout_s: float = Field(default=10.0, gt=0)
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    aws_profile: str | None = None
    queue_urls: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names_are_valid(self) -> Self:
        for name in (self.send_queue, self.receive_queue):
            if name is not None:
                self.full_name(name, dead_letter=True)
        return self

    def session_options(self) -> dict[str, str | None]:
        """Arguments of ``aioboto3.Session``: what is configured, the rest left to botocore."""
        return {
            "aws_access_key_id": _secret(self.aws_access_key_id),
            "aws_secret_access_key": _secret(self.aws_secret_access_key),
            "aws_session_token": _secret(self.aws_session_token),
            "profile_name": self.aws_profile,
            "region_name": self.region,
        }

    @property
    def retention_attributes(self) -> dict[str, str]:
        """The queue attributes that set :attr:`message_retention_s` (none: SQS's default)."""
        if self.message_retention_s is None:
            return {}
        return {"MessageRetentionPeriod": str(self.message_retention_s)}

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


class QueueMissing(ConnectionClosed):
    """The queue does not exist (deleted, or lost by an endpoint that restarted: moto keeps
    its queues in memory). The end that owns a queue may create it again."""


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
        return QueueMissing(f"SQS queue {queue} does not exist")
    if code in ("MessageTooLong", "AWS.SimpleQueueService.MessageTooLong") or (
        code == "InvalidParameterValue"
        and ("too long" in detail.lower() or "shorter than" in detail.lower())
    ):
        return MessageTooLarge(size_bytes, SQS_MAX_MESSAGE_BYTES)
    if code in _UNAVAILABLE_CODES:
        return ConnectionClosed(f"SQS {operation} on {queue} unavailable: {code} {detail}")
    return TransportError(f"SQS {operation} on {queue} failed: {code} {detail}")


def botocore_config(config: SqsConfig, **options: Any) -> Config:
    """The botocore client settings for ``config``: its timeouts, and no retries of its
    own, since botocore retries a send whose first attempt may have reached SQS (the
    connection dropped mid-request), and only the last attempt's error would tell the
    caller; :func:`call_sqs` retries, judging each attempt."""
    return Config(
        connect_timeout=config.request_timeout_s,
        read_timeout=config.request_timeout_s + config.wait_time_seconds,
        retries={"total_max_attempts": 1, "mode": "standard"},
        **options,
    )


def may_have_reached_sqs(exc: BaseException) -> bool:
    """Whether a request that failed with botocore's ``exc`` may still have been carried
    out by SQS: no answer came, the connection broke after it was open, or SQS failed
    inside (a 5xx) - as opposed to a refusal, or no connection at all."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return int(status) >= 500 and str(error.get("Code", "")) not in _THROTTLED_CODES
    if isinstance(exc, _NEVER_SENT_ERRORS):
        return False
    if isinstance(exc, EndpointConnectionError):
        # aiobotocore raises it for any aiohttp connection error, a reset mid-request
        # included; only a failed connect proves the request never left.
        return not isinstance(exc.kwargs.get("error"), aiohttp.ClientConnectorError)
    return True


def _worth_retrying(action: str, exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _THROTTLED_CODES:
            return True
        return action not in _SENDS and code in _UNAVAILABLE_CODES
    if isinstance(exc, (NoCredentialsError, ParamValidationError)):
        return False  # the same request fails the same way
    return action not in _SENDS or not may_have_reached_sqs(exc)


async def call_sqs(
    client: Any, action: str, queue: str, *, timeout_s: float, size: int = 0, **request: Any
) -> Any:
    """Call ``client``'s ``action`` with ``request``, bounded, with errors translated.

    A failure worth another try (throttled, unavailable, connection lost) is retried
    up to three attempts in all within ``timeout_s``; a send only when SQS surely did not
    take it (:func:`may_have_reached_sqs`), so a caller told "not sent" can believe it.

    Raises:
        BusTimeout: no answer within ``timeout_s``.
        TransportError (QueueMissing, MessageTooLarge, ConnectionClosed, ...): as
            :func:`translate_client_error` says, for the last attempt; its ``__cause__``
            is botocore's error.
    """
    try:
        async with asyncio.timeout(timeout_s):
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    return await getattr(client, action)(**request)
                except (ClientError, BotoCoreError, OSError) as exc:
                    if attempt == _ATTEMPTS or not _worth_retrying(action, exc):
                        raise translate_client_error(
                            exc, operation=action, queue=queue, size_bytes=size
                        ) from exc
                # A pause before the next attempt, so a struggling endpoint is not hammered.
                await asyncio.sleep(_FIRST_BACKOFF_S * 2 ** (attempt - 1))
    except TimeoutError:
        raise BusTimeout(f"SQS {action} on {queue}", timeout_s) from None
    raise AssertionError("unreachable: the last attempt returns or raises")


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


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
