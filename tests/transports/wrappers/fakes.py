"""Fakes that implement the real protocols, for the wrappers' unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from transports.base import Delivery, TransportBase, TransportCapabilities, TransportType
from transports.envelope import Envelope
from transports.errors import BusError, ConnectionClosed
from transports.message import TransportMessage


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSleep:
    """A ``sleep`` that returns only when the test releases it, recording each request."""

    def __init__(self) -> None:
        self.requested: list[float] = []
        self._release = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.requested.append(seconds)
        self.started.set()
        await self._release.wait()

    def release(self) -> None:
        self._release.set()


class RecordingSleep:
    """A ``sleep`` that returns at once and records how long it was asked to wait."""

    def __init__(self) -> None:
        self.requested: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.requested.append(seconds)


@dataclass
class ScriptedTransport(TransportBase):
    """Records what is sent; ``fail`` decides, per attempt, which error a send raises."""

    fail: Callable[[TransportMessage, Envelope | None], BusError | None] = lambda m, e: None
    at_least_once: bool = False
    max_message_bytes: int = 64 * 1024
    sent: list[tuple[TransportMessage, Envelope | None]] = field(default_factory=list)
    attempts: int = 0
    inbox: asyncio.Queue[Delivery] = field(default_factory=asyncio.Queue)
    closed: bool = False

    @property
    def transport_type(self) -> TransportType:
        return TransportType.MEMORY

    @property
    def capabilities(self) -> TransportCapabilities:
        return TransportCapabilities(
            ordered=True,
            at_least_once=self.at_least_once,
            max_message_bytes=self.max_message_bytes,
            carries_envelope=True,
        )

    def is_connected(self) -> bool:
        return not self.closed

    async def send(self, message: TransportMessage, envelope: Envelope | None = None) -> None:
        self.attempts += 1
        if self.closed:
            raise ConnectionClosed("scripted transport is closed")
        error = self.fail(message, envelope)
        if error is not None:
            raise error
        self.sent.append((message, envelope))

    async def receive(self) -> Delivery:
        return await self.inbox.get()

    async def close(self) -> None:
        self.closed = True
