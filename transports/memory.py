"""An in-memory connected pair of transports, for tests and in-process wiring.

Frames travel as encoded bytes plus the envelope, exactly as they would over a real pipe,
so size caps and decode errors behave the same. Each direction is a bounded queue: a
full queue makes ``send`` wait (backpressure), so memory never grows without bound.
"""

from __future__ import annotations

import asyncio
from collections import deque

from transports.base import Delivery, TransportBase, TransportCapabilities, TransportType
from transports.codec import DEFAULT_LIMITS, DecodeLimits, decode_message, encode_message
from transports.envelope import Envelope
from transports.errors import ConnectionClosed, MessageTooLarge
from transports.message import TransportMessage

__all__ = ["MemoryTransport"]

DEFAULT_MAX_QUEUED = 1024

_Frame = tuple[bytes, Envelope | None]


class _Channel:
    """One direction: a bounded FIFO whose ends can close independently."""

    def __init__(self, capacity: int) -> None:
        self._frames: deque[_Frame] = deque()
        self._capacity = capacity
        self._changed = asyncio.Condition()
        self.writer_closed = False
        self.reader_closed = False

    async def put(self, frame: _Frame) -> None:
        async with self._changed:
            await self._changed.wait_for(
                lambda: (
                    len(self._frames) < self._capacity or self.reader_closed or self.writer_closed
                )
            )
            if self.writer_closed:
                raise ConnectionClosed("memory transport is closed")
            if self.reader_closed:
                raise ConnectionClosed("memory transport peer closed")
            self._frames.append(frame)
            self._changed.notify_all()

    async def get(self) -> _Frame:
        async with self._changed:
            await self._changed.wait_for(
                lambda: bool(self._frames) or self.writer_closed or self.reader_closed
            )
            if self.reader_closed:
                raise ConnectionClosed("memory transport is closed")
            if not self._frames:
                raise ConnectionClosed("memory transport peer closed")
            frame = self._frames.popleft()
            self._changed.notify_all()
            return frame

    async def close_writer(self) -> None:
        async with self._changed:
            self.writer_closed = True
            self._changed.notify_all()

    async def close_reader(self) -> None:
        async with self._changed:
            self.reader_closed = True
            self._frames.clear()  # never read: release the memory now
            self._changed.notify_all()


class MemoryTransport(TransportBase):
    """One end of an in-memory pair; build both with :meth:`pair`."""

    def __init__(self, inbound: _Channel, outbound: _Channel, limits: DecodeLimits) -> None:
        self._inbound = inbound
        self._outbound = outbound
        self._limits = limits
        self._closed = False
        self._capabilities = TransportCapabilities(
            ordered=True,
            at_least_once=False,
            max_message_bytes=limits.max_message_bytes,
            carries_envelope=True,
        )

    @classmethod
    def pair(
        cls, *, max_queued: int = DEFAULT_MAX_QUEUED, limits: DecodeLimits = DEFAULT_LIMITS
    ) -> tuple[MemoryTransport, MemoryTransport]:
        """Two connected ends; each direction holds at most ``max_queued`` messages."""
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        a_to_b = _Channel(max_queued)
        b_to_a = _Channel(max_queued)
        return cls(b_to_a, a_to_b, limits), cls(a_to_b, b_to_a, limits)

    @property
    def transport_type(self) -> TransportType:
        return TransportType.MEMORY

    @property
    def capabilities(self) -> TransportCapabilities:
        return self._capabilities

    def is_connected(self) -> bool:
        return not (self._closed or self._outbound.reader_closed)

    async def send(self, message: TransportMessage, envelope: Envelope | None = None) -> None:
        await self.send_frame(encode_message(message), envelope)

    async def send_frame(self, payload: bytes, envelope: Envelope | None = None) -> None:
        """Queue one encoded body; waits while the peer's queue is full.

        Raises:
            ConnectionClosed: this end or the peer is closed (before or while waiting).
            MessageTooLarge: over the size cap; nothing was queued.
        """
        if len(payload) > self._limits.max_message_bytes:
            raise MessageTooLarge(len(payload), self._limits.max_message_bytes)
        if not self.is_connected():
            raise ConnectionClosed("memory transport is closed")
        await self._outbound.put((payload, envelope))

    async def receive(self) -> Delivery:
        payload, envelope = await self._inbound.get()
        return Delivery(
            message=decode_message(payload, self._limits),
            envelope=envelope,
            size_bytes=len(payload),
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Waiting senders and receivers on both channels wake and see ConnectionClosed;
        # what we already sent stays readable by the peer.
        await self._outbound.close_writer()
        await self._inbound.close_reader()
