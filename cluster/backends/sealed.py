"""End-to-end encryption on the broker backends (a bus with an ``encryption`` section).

Clients seal requests for their pool's topic or queue and open answers from their own;
workers open requests and seal what they send back to ``reply_to``. Each side binds the
destination into the message, so a request moved to another pool's topic, or an answer
moved to another client's, does not open. What stays readable is listed in
:mod:`transports.crypto.seal` and README ("Encryption between clients and workers").

Each link (a client's wire, a worker's source) has its own keyring built from the
configuration, so the per-key message cap counts that link's messages, and its own
:class:`~cluster.backends.key_follower.KeyFollower`, which keeps that keyring at the
bus's live keyring state (``raybus keys``) from before the link's first message on.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from cluster.backends.key_follower import KeyFollower
from cluster.config import BusConfig
from transports.base import Delivery
from transports.crypto.seal import Direction
from transports.crypto.transport import SealedChannel
from transports.envelope import Envelope
from transports.errors import BusError, MessageTooLarge
from transports.frame import Frame

if TYPE_CHECKING:  # broker.py wraps its wires with this module: types only, no cycle
    from cluster.backends.broker import BrokerWire
    from cluster.backends.broker_source import Publish

__all__ = [
    "SealedClientWire",
    "SealedReceiver",
    "channel_for",
    "keys_follower",
    "sealed_publish",
    "sealed_send",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9_./-]")


def channel_for(config: BusConfig, sender: str, sends: Direction) -> SealedChannel | None:
    """The link's sealing channel, or None when the bus is not encrypted."""
    settings = config.encryption
    if settings is None:
        return None
    return SealedChannel(
        settings.keyring(),
        sender="s" + _UNSAFE.sub("-", sender)[:100],
        sends=sends,
        replay_window=settings.replay_window,
    )


def keys_follower(config: BusConfig, channel: SealedChannel, what: str) -> KeyFollower:
    """The follower of the bus's keyring state for ``channel``'s keyring; ``what`` names
    the link (``worker <actor name>``) where ``raybus keys`` names who did not answer."""
    return KeyFollower(config.name, channel.keyring, f"{what}#{uuid.uuid4().hex[:6]}")


class SealedClientWire:
    """A client's :class:`BrokerWire` that seals requests and opens answers.

    ``follower``: keeps the channel's keyring at the bus's keyring state (started first,
    stopped last); None keeps the keys the channel was built with.
    """

    def __init__(
        self, wire: BrokerWire, channel: SealedChannel, follower: KeyFollower | None = None
    ) -> None:
        self._wire = wire
        self._channel = channel
        self._follower = follower

    @property
    def reply_to(self) -> str:
        return self._wire.reply_to

    async def start(self) -> None:
        if self._follower is not None:
            await self._follower.start()
        await self._wire.start()

    def destination_for_pool(self, pool: str) -> str:
        return self._wire.destination_for_pool(pool)

    async def send(self, destination: str, frames: list[Frame]) -> list[tuple[Frame, BusError]]:
        refused: list[tuple[Frame, BusError]] = []
        originals: dict[int, Frame] = {}
        sealed_frames: list[Frame] = []
        for frame in frames:
            try:
                body, clear = self._channel.seal_body(frame.body, frame.envelope, destination)
            except MessageTooLarge as exc:
                refused.append((frame, exc))
                continue
            assert clear is not None  # an envelope in, its readable part out
            sealed = Frame(clear, body)
            originals[id(sealed)] = frame
            sealed_frames.append(sealed)
        for sealed, why in await self._wire.send(destination, sealed_frames):
            refused.append((originals[id(sealed)], why))
        return refused

    async def next_delivery(self) -> Delivery:
        delivery = await self._wire.next_delivery()
        return await self._channel.open(delivery, frozenset({self._wire.reply_to}), redelivers=True)

    def is_connected(self) -> bool:
        return self._wire.is_connected()

    async def close(self) -> None:
        await self._wire.close()
        if self._follower is not None:
            await self._follower.stop()


class _Receiver(Protocol):
    async def start(self) -> object: ...

    async def receive(self) -> Delivery: ...

    def is_connected(self) -> bool: ...

    async def close(self) -> None: ...


class SealedReceiver:
    """A worker's receiver of its pool's requests that opens each one (``follower`` as
    for :class:`SealedClientWire`)."""

    def __init__(
        self,
        receiver: _Receiver,
        channel: SealedChannel,
        accepts: frozenset[str],
        follower: KeyFollower | None = None,
    ) -> None:
        self._receiver = receiver
        self._channel = channel
        self._accepts = accepts
        self._follower = follower

    async def start(self) -> object:
        if self._follower is not None:
            await self._follower.start()
        return await self._receiver.start()

    async def receive(self) -> Delivery:
        delivery = await self._receiver.receive()
        return await self._channel.open(delivery, self._accepts, redelivers=True)

    def is_connected(self) -> bool:
        return self._receiver.is_connected()

    async def close(self) -> None:
        await self._receiver.close()
        if self._follower is not None:
            await self._follower.stop()


def sealed_publish(publish: Publish, channel: SealedChannel) -> Publish:
    """A worker's :data:`Publish` that seals each answer for its destination."""

    async def seal_then_publish(
        destination: str, body: bytes, envelope: Envelope
    ) -> Awaitable[None]:
        sealed, clear = channel.seal_body(body, envelope, destination)
        assert clear is not None  # an envelope in, its readable part out
        return await publish(destination, sealed, clear)

    return seal_then_publish


def sealed_send(
    send: Callable[[str, bytes, Envelope], Awaitable[None]], channel: SealedChannel
) -> Callable[[str, bytes, Envelope], Awaitable[None]]:
    """As :func:`sealed_publish`, for a send that confirms as it returns (SQS)."""

    async def seal_then_send(destination: str, body: bytes, envelope: Envelope) -> None:
        sealed, clear = channel.seal_body(body, envelope, destination)
        assert clear is not None  # an envelope in, its readable part out
        await send(destination, sealed, clear)

    return seal_then_send
