"""The shared shell of every wrapper: it forwards to the transport it wraps.

A wrapper takes its inner transport in the constructor (anyio's layered streams) and
reports the inner transport's type, capabilities and connection state unless it changes
them. ``start`` starts the inner transport when that has a ``start`` (brokers create
their clients there), so ``async with Wrapper(KafkaTransport(...))`` works like the bare
transport.

Wrappers that put their own data on the wire send it as a JSON-RPC notification whose
method begins with ``rpc.`` (:func:`extension_message`): JSON-RPC 2.0 (section 4.3)
reserves those names for extensions, so no application message is mistaken for one, and
every inner transport (stdio and SQS text bodies included) carries it unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Self

from transports.base import Delivery, Transport, TransportBase, TransportCapabilities, TransportType
from transports.envelope import Envelope
from transports.errors import InvalidRequest
from transports.message import Notification, TransportMessage

__all__ = ["EXTENSION_PREFIX", "TransportWrapper", "extension_message", "extension_params"]

EXTENSION_PREFIX = "rpc.raybus."


class TransportWrapper(TransportBase):
    """Forwards every call to ``inner``; subclasses override what they change."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner

    @property
    def inner(self) -> Transport:
        return self._inner

    @property
    def transport_type(self) -> TransportType:
        return self._inner.transport_type

    @property
    def capabilities(self) -> TransportCapabilities:
        return self._inner.capabilities

    def is_connected(self) -> bool:
        return self._inner.is_connected()

    async def start(self) -> Self:
        """Start the inner transport if it needs starting (broker clients do)."""
        start: Callable[[], Awaitable[Any]] | None = getattr(self._inner, "start", None)
        if start is not None:
            await start()
        return self

    async def __aenter__(self) -> Self:
        return await self.start()  # TransportBase.__aexit__ closes

    async def send(self, message: TransportMessage, envelope: Envelope | None = None) -> None:
        await self._inner.send(message, envelope)

    async def receive(self) -> Delivery:
        return await self._inner.receive()

    async def close(self) -> None:
        await self._inner.close()


def extension_message(kind: str, version: int, **fields: Any) -> Notification:
    """The notification a wrapper sends for its own frames (``rpc.raybus.<kind>``)."""
    return Notification(method=EXTENSION_PREFIX + kind, params={"v": version, **fields})


def extension_params(message: TransportMessage, kind: str, version: int) -> dict[str, Any] | None:
    """The params of a ``rpc.raybus.<kind>`` frame, or None for any other message.

    Raises:
        InvalidRequest: it is such a frame but of another format version, or its params
            are not an object.
    """
    if not isinstance(message, Notification) or message.method != EXTENSION_PREFIX + kind:
        return None
    params = message.params
    if not isinstance(params, dict):
        raise InvalidRequest(f"{message.method}: params must be an object")
    if params.get("v") != version:
        raise InvalidRequest(
            f"{message.method}: format version {params.get('v')!r} is not supported "
            f"(this end reads version {version})"
        )
    return params
