"""Frame boundaries on byte streams: newline-delimited (MCP stdio) or length-prefixed.

Both framings check the size before a frame is buffered whole. An oversize frame is
skipped in bounded chunks (the stream stays in sync) and reported once as
:class:`~transports.errors.MessageTooLarge`; the next frame reads normally.
"""

from __future__ import annotations

import asyncio
import struct
from enum import StrEnum
from typing import Protocol

from transports.errors import ConnectionClosed, MessageTooLarge

__all__ = ["FrameReader", "Framing", "LengthPrefixedFrames", "NewlineFrames", "frames_for"]

_DISCARD_CHUNK_BYTES = 64 * 1024
_LENGTH = struct.Struct(">I")


class Framing(StrEnum):
    NEWLINE = "newline"
    LENGTH_PREFIXED = "length-prefixed"


class FrameReader(Protocol):
    def encode(self, payload: bytes) -> bytes: ...

    async def read_frame(self, reader: asyncio.StreamReader) -> bytes: ...

    def stream_limit(self) -> int:
        """The ``limit`` to give the asyncio StreamReader this framing reads from."""
        ...


class NewlineFrames:
    """One JSON text per line; blank lines are skipped (MCP stdio framing)."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes

    def stream_limit(self) -> int:
        return self.max_frame_bytes + 1  # the payload plus its newline

    def encode(self, payload: bytes) -> bytes:
        if b"\n" in payload:
            raise ValueError("a newline-framed payload must not contain a newline")
        return payload + b"\n"

    async def read_frame(self, reader: asyncio.StreamReader) -> bytes:
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    raise ConnectionClosed("peer closed in the middle of a message") from None
                raise ConnectionClosed("peer closed the stream") from None
            except asyncio.LimitOverrunError as exc:
                skipped = await self._skip_line(reader, exc.consumed)
                raise MessageTooLarge(skipped, self.max_frame_bytes) from None
            except (ConnectionError, OSError) as exc:
                raise ConnectionClosed(f"stream failed: {exc}") from None
            if line.strip():
                return line[:-1]

    @staticmethod
    async def _skip_line(reader: asyncio.StreamReader, buffered: int) -> int:
        # readuntil leaves the data in the buffer on overrun: drop it up to the newline.
        skipped = 0
        pending = buffered
        while True:
            try:
                await reader.readexactly(pending)
                skipped += pending
                rest = await reader.readuntil(b"\n")
                return skipped + len(rest) - 1
            except asyncio.LimitOverrunError as exc:
                pending = max(exc.consumed, 1)
            except asyncio.IncompleteReadError:
                raise ConnectionClosed("peer closed in the middle of a message") from None


class LengthPrefixedFrames:
    """A 4-byte big-endian length, then that many bytes."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes

    def stream_limit(self) -> int:
        return max(self.max_frame_bytes, 2**16)

    def encode(self, payload: bytes) -> bytes:
        return _LENGTH.pack(len(payload)) + payload

    async def read_frame(self, reader: asyncio.StreamReader) -> bytes:
        try:
            header = await reader.readexactly(_LENGTH.size)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise ConnectionClosed("peer closed in the middle of a frame header") from None
            raise ConnectionClosed("peer closed the stream") from None
        except (ConnectionError, OSError) as exc:
            raise ConnectionClosed(f"stream failed: {exc}") from None
        (size,) = _LENGTH.unpack(header)
        try:
            if size > self.max_frame_bytes:
                remaining = size
                while remaining:
                    chunk = min(remaining, _DISCARD_CHUNK_BYTES)
                    await reader.readexactly(chunk)
                    remaining -= chunk
                raise MessageTooLarge(size, self.max_frame_bytes)
            return await reader.readexactly(size)
        except asyncio.IncompleteReadError:
            raise ConnectionClosed("peer closed in the middle of a frame") from None
        except (ConnectionError, OSError) as exc:
            raise ConnectionClosed(f"stream failed: {exc}") from None


def frames_for(framing: Framing, max_frame_bytes: int) -> NewlineFrames | LengthPrefixedFrames:
    if framing is Framing.NEWLINE:
        return NewlineFrames(max_frame_bytes)
    return LengthPrefixedFrames(max_frame_bytes)
