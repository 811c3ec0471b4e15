"""The ``Transport`` protocol every pipe implements, and what it hands back.

A transport is a dumb pipe for :data:`~transports.message.TransportMessage` objects: it
never changes a JSON-RPC body. It declares what it can do as data
(:class:`TransportCapabilities`) so callers read flags instead of checking types, and
wrappers (encryption, batching, policy, ...) implement the same protocol as what they
wrap, so they compose.

``receive`` returns a :class:`Delivery`: the message, the envelope that travelled beside
it, and ``ack`` / ``nack`` for transports whose broker redelivers until acknowledged
(acknowledge only after the response is durably sent).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from transports.envelope import Envelope
from transports.message import TransportMessage

__all__ = [
    "Delivery",
    "Transport",
    "TransportBase",
    "TransportCapabilities",
    "TransportType",
]


class TransportType(StrEnum):
    MEMORY = "memory"
    STDIO = "stdio"
    TCP = "tcp"
    HTTP = "http"
    WEBSOCKET = "websocket"
    KAFKA = "kafka"
    SQS = "sqs"


@dataclass(frozen=True, slots=True)
class TransportCapabilities:
    """What a transport guarantees; callers branch on these, never on the class.

    Attributes:
        ordered: messages from one sender arrive in the order sent.
        at_least_once: an unacknowledged delivery is redelivered (``ack`` matters).
        max_message_bytes: the largest encoded body it sends or accepts.
        carries_envelope: routing data travels with the body; when False, passing an
            envelope to ``send`` raises instead of silently dropping it.
        peer_close_visible: the receiver learns that its peer closed (``receive`` raises
            ConnectionClosed once drained); False for brokers, where a topic has no
            single peer and ``receive`` keeps waiting for other producers.
    """

    ordered: bool
    at_least_once: bool
    max_message_bytes: int
    carries_envelope: bool
    peer_close_visible: bool = True


AckCallback = Callable[[], Awaitable[None]]


async def _nothing_to_acknowledge() -> None:
    return None


@dataclass(slots=True)
class Delivery:
    """One received message with its routing data and its acknowledgement hooks.

    ``ack`` and ``nack`` are no-ops on transports that do not redeliver; on brokers,
    ``ack`` commits/deletes and ``nack`` makes the message available again.
    """

    message: TransportMessage
    envelope: Envelope | None = None
    size_bytes: int = 0
    _ack: AckCallback = _nothing_to_acknowledge
    _nack: AckCallback = _nothing_to_acknowledge

    async def ack(self) -> None:
        await self._ack()

    async def nack(self) -> None:
        await self._nack()


@runtime_checkable
class Transport(Protocol):
    """A bidirectional pipe for JSON-RPC messages.

    Failure modes every implementation shares:
        ``send`` raises ConnectionClosed after ``close`` (or once the peer is gone),
        MessageTooLarge before writing anything over ``capabilities.max_message_bytes``,
        EnvelopeNotSupported for an envelope it cannot carry. ``receive`` raises
        ConnectionClosed once the peer closed and everything it sent was received, and
        InvalidMessage (carrying the JSON-RPC error to answer) for one bad frame, after
        which the transport keeps working.
    """

    @property
    def transport_type(self) -> TransportType: ...

    @property
    def capabilities(self) -> TransportCapabilities: ...

    def is_connected(self) -> bool: ...

    async def send(self, message: TransportMessage, envelope: Envelope | None = None) -> None: ...

    async def receive(self) -> Delivery: ...

    async def close(self) -> None: ...


class TransportBase:
    """Shared conveniences for concrete transports: ``async with`` closes."""

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
