"""One send per response: the writes of a connection's loop turn leave together.

uvicorn writes a response's head and its body with one ``transport.write`` each, and
uvloop sends each at once: two segments on the wire, two system calls here and two
wake-ups of the client, for a tool call's answer that fits in one. Under 64 clients
calling ``echo``, those two sends were 16 % of the gateway replica's CPU (py-spy), and
the clients (one process in the bench, competing for the same cores) read twice.

:class:`CoalescedWrites` stands in for the connection's transport: a write with nothing
held is held until the end of the current loop turn; a write that finds bytes held
sends them all at once. So a head and the body that follows it in the same turn (what
a JSON answer does) leave as one send, with no delay for the body, and a head alone (a
stream's first event comes later) leaves at the end of the turn. Order is kept, and
closing sends what is held first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["CoalescedWrites"]


class CoalescedWrites:
    """A transport whose writes of one loop turn go out as one (see the module doc)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
            return
        held, self._held = self._held, None
        self._transport.write(held + data)

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(chunks))

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        # Everything else (reading, flow control, extra info) is the transport's own.
        return getattr(self._transport, name)
