"""``LoggingTransport``: structured events and counters for the traffic of a transport.

Every send and receive is one DEBUG event on the logger (``transports.wrappers.logging``
unless another is given) with its fields in ``extra`` for structured handlers: ``event``
(``transport.sent``, ``transport.received``, ``transport.send_failed``,
``transport.receive_failed``), ``transport`` (the name given), ``kind``
(request/notification/response), ``method``, ``rpc_id``, ``client_id``, ``request_id``,
``bytes`` and, for failures, ``error``. Failures are logged at ``failure_level``
(WARNING by default). :meth:`LoggingTransport.counters` returns the running totals.

Payloads are never logged unless ``log_payloads=True``; even then the value of every
member whose name looks like a secret (authorization, token, password, secret, api key,
cookie, credentials, ...) and every string that looks like a credential (``Bearer ...``,
``Basic ...``) is replaced by ``[REDACTED]``, and the logged text is cut to
``max_payload_chars``. Envelope attributes and the principal are never logged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from transports.base import Delivery, Transport
from transports.codec import encode_message
from transports.envelope import Envelope
from transports.errors import BusError
from transports.message import Notification, Request, TransportMessage
from transports.wrappers.delegate import TransportWrapper

__all__ = ["SECRET_KEY_PARTS", "LoggingTransport", "TransportCounters", "redact"]

_default_logger = logging.getLogger(__name__)

REDACTED = "[REDACTED]"
# A member is secret when its name, lower-cased without "-" and "_", contains one of these.
SECRET_KEY_PARTS = frozenset(
    {
        "authorization",
        "token",
        "password",
        "passwd",
        "secret",
        "apikey",
        "cookie",
        "credential",
        "privatekey",
        "signature",
        "session",
    }
)
_SECRET_VALUE_PREFIXES = ("bearer ", "basic ", "digest ", "negotiate ")
_MAX_REDACT_DEPTH = 32
DEFAULT_MAX_PAYLOAD_CHARS = 2000


@dataclass(frozen=True, slots=True)
class TransportCounters:
    """Running totals since the transport was built."""

    sent: int = 0
    received: int = 0
    send_failed: int = 0
    receive_failed: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


def _is_secret_key(name: str) -> bool:
    folded = name.lower().replace("-", "").replace("_", "")
    return any(part in folded for part in SECRET_KEY_PARTS)


def redact(value: Any, depth: int = 0) -> Any:
    """A copy of JSON ``value`` with secret members and credential-like strings replaced."""
    if depth > _MAX_REDACT_DEPTH:
        return REDACTED  # deeper than anything we log: never risk printing it
    if isinstance(value, dict):
        return {
            key: REDACTED if _is_secret_key(str(key)) else redact(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item, depth + 1) for item in value]
    if isinstance(value, str) and value.lower().startswith(_SECRET_VALUE_PREFIXES):
        return REDACTED
    return value


def _describe(message: TransportMessage) -> dict[str, Any]:
    if isinstance(message, Request):
        return {"kind": "request", "method": message.method, "rpc_id": message.id}
    if isinstance(message, Notification):
        return {"kind": "notification", "method": message.method, "rpc_id": None}
    return {"kind": "response", "method": None, "rpc_id": message.id}


class LoggingTransport(TransportWrapper):
    """Logs each message's metadata and counts traffic; the wire is unchanged.

    Args:
        inner: the transport to observe.
        name: how events name this transport (a pool, a topic, a role).
        logger: where events go; the library never configures handlers.
        log_payloads: add the redacted JSON body to each event (``payload``).
        failure_level: the level of send/receive failure events.
        max_payload_chars: longest payload text logged.
    """

    def __init__(
        self,
        inner: Transport,
        *,
        name: str = "transport",
        logger: logging.Logger | None = None,
        log_payloads: bool = False,
        failure_level: int = logging.WARNING,
        max_payload_chars: int = DEFAULT_MAX_PAYLOAD_CHARS,
    ) -> None:
        super().__init__(inner)
        self._name = name
        self._logger = logger or _default_logger
        self._log_payloads = log_payloads
        self._failure_level = failure_level
        self._max_payload_chars = max_payload_chars
        self._counters = TransportCounters()

    def counters(self) -> TransportCounters:
        """A snapshot of the totals."""
        return self._counters

    async def send(self, message: TransportMessage, envelope: Envelope | None = None) -> None:
        size = len(encode_message(message))
        try:
            await self._inner.send(message, envelope)
        except BusError as exc:
            self._counters = replace(self._counters, send_failed=self._counters.send_failed + 1)
            self._event("transport.send_failed", message, envelope, size, exc)
            raise
        self._counters = replace(
            self._counters,
            sent=self._counters.sent + 1,
            bytes_sent=self._counters.bytes_sent + size,
        )
        self._event("transport.sent", message, envelope, size)

    async def receive(self) -> Delivery:
        try:
            delivery = await self._inner.receive()
        except BusError as exc:
            self._counters = replace(
                self._counters, receive_failed=self._counters.receive_failed + 1
            )
            self._failure("transport.receive_failed", exc)
            raise
        self._counters = replace(
            self._counters,
            received=self._counters.received + 1,
            bytes_received=self._counters.bytes_received + delivery.size_bytes,
        )
        self._event("transport.received", delivery.message, delivery.envelope, delivery.size_bytes)
        return delivery

    def _event(
        self,
        event: str,
        message: TransportMessage,
        envelope: Envelope | None,
        size: int,
        error: BusError | None = None,
    ) -> None:
        level = logging.DEBUG if error is None else self._failure_level
        if not self._logger.isEnabledFor(level):
            return
        fields: dict[str, Any] = {
            "event": event,
            "transport": self._name,
            **_describe(message),
            "client_id": envelope.client_id if envelope else None,
            "request_id": envelope.request_id if envelope else None,
            "bytes": size,
        }
        if error is not None:
            fields["error"] = f"{type(error).__name__}: {error}"
        if self._log_payloads:
            text = json.dumps(redact(message.to_json_dict()), ensure_ascii=False)
            fields["payload"] = text[: self._max_payload_chars]
        self._logger.log(
            level,
            "%s %s %s %s (%d bytes)%s",
            event,
            self._name,
            fields["kind"],
            fields["method"] or fields["rpc_id"],
            size,
            f": {fields['error']}" if error is not None else "",
            extra=fields,
        )

    def _failure(self, event: str, error: BusError) -> None:
        self._logger.log(
            self._failure_level,
            "%s %s: %s",
            event,
            self._name,
            error,
            extra={"event": event, "transport": self._name, "error": str(error)},
        )
