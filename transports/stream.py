"""A transport over an asyncio byte stream (pipes, sockets), framed by :mod:`framing`.

Byte streams carry only the JSON-RPC body (that is what MCP peers on stdio or TCP
expect), so ``carries_envelope`` is False. Frames are written with one ``write`` call,
so concurrent senders never interleave; reads are serialised by a lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from transports.base import Delivery, TransportBase, TransportCapabilities, TransportType
from transports.codec import DEFAULT_LIMITS, DecodeLimits, decode_message, encode_message
from transports.envelope import Envelope
from transports.errors import ConnectionClosed, EnvelopeNotSupported, MessageTooLarge
from transports.framing import LengthPrefixedFrames, NewlineFrames
from transports.message import TransportMessage

__all__ = ["StreamTransport"]

logger = logging.getLogger(__name__)

CloseHook = Callable[[], Awaitable[None]]


class StreamTransport(TransportBase):
    """JSON-RPC over a (reader, writer) pair with newline or length-prefixed frames.

    Args:
        reader / writer: the stream halves; the reader's ``limit`` must be at least
            ``frames.stream_limit()``.
        frames: the framing (see :func:`transports.framing.frames_for`).
        transport_type: what to report as ``transport_type``.
        limits: decode bounds; ``limits.max_message_bytes`` is also the send cap.
        on_close: extra clean-up run once by :meth:`close` (e.g. reaping a child).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        frames: NewlineFrames | LengthPrefixedFrames,
        transport_type: TransportType,
        limits: DecodeLimits = DEFAULT_LIMITS,
        on_close: CloseHook | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._frames = frames
        self._type = transport_type
        self._limits = limits
        self._on_close = on_close
        self._read_lock = asyncio.Lock()
        self._closed = False
        self._peer_gone = False
        self._capabilities = TransportCapabilities(
            ordered=True,
            at_least_once=False,
            max_message_bytes=limits.max_message_bytes,
            carries_envelope=False,
        )

    @property
    def transport_type(self) -> TransportType:
        return self._type

    @property
    def capabilities(self) -> TransportCapabilities:
        return self._capabilities

    def is_connected(self) -> bool:
        return not (self._closed or self._peer_gone or self._writer.is_closing())

    async def send(self, message: TransportMessage, envelope: Envelope | None = None) -> None:
        if envelope is not None:
            raise EnvelopeNotSupported(self._type)
        await self.send_frame(encode_message(message))

    async def send_frame(self, payload: bytes) -> None:
        """Write one already-encoded body (forwarding without a decode/encode round trip).

        Raises:
            ConnectionClosed: closed, or the peer went away while writing.
            MessageTooLarge: the payload is over the send cap; nothing was written.
        """
        if not self.is_connected():
            raise ConnectionClosed(f"{self._type} transport is closed")
        if len(payload) > self._limits.max_message_bytes:
            raise MessageTooLarge(len(payload), self._limits.max_message_bytes)
        try:
            self._writer.write(self._frames.encode(payload))
            await self._writer.drain()
        except (ConnectionError, OSError, RuntimeError) as exc:
            # RuntimeError: asyncio refuses writes on a transport closed under us.
            self._peer_gone = True
            raise ConnectionClosed(f"{self._type} peer went away: {exc}") from None

    async def receive_frame(self) -> bytes:
        """Read one frame's raw bytes.

        Raises:
            ConnectionClosed: this side closed, or the peer closed and nothing is left.
            MessageTooLarge: one oversize frame was skipped; the next read continues.
        """
        if self._closed:
            raise ConnectionClosed(f"{self._type} transport is closed")
        async with self._read_lock:
            try:
                return await self._frames.read_frame(self._reader)
            except ConnectionClosed:
                self._peer_gone = True
                raise

    async def receive(self) -> Delivery:
        frame = await self.receive_frame()
        return Delivery(message=decode_message(frame, self._limits), size_bytes=len(frame))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        # Wake a reader blocked on this stream: it must see ConnectionClosed, not hang.
        self._reader.feed_eof()
        if self._on_close is not None:
            await self._on_close()
        logger.debug("%s transport closed", self._type)
