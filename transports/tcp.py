"""JSON-RPC over TCP: newline framing by default, 4-byte length prefix as an option.

:func:`connect_tcp` dials a listener; :class:`TcpListener` accepts connections and hands
each one out as a transport. Listeners bind 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from transports.base import TransportType
from transports.codec import DEFAULT_LIMITS, DecodeLimits
from transports.errors import ConnectionClosed
from transports.framing import Framing, frames_for
from transports.stream import StreamTransport

__all__ = ["TcpListener", "connect_tcp"]

logger = logging.getLogger(__name__)


def _transport(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    framing: Framing,
    limits: DecodeLimits,
) -> StreamTransport:
    return StreamTransport(
        reader,
        writer,
        frames=frames_for(framing, limits.max_message_bytes),
        transport_type=TransportType.TCP,
        limits=limits,
    )


async def connect_tcp(
    host: str,
    port: int,
    *,
    framing: Framing = Framing.NEWLINE,
    limits: DecodeLimits = DEFAULT_LIMITS,
    connect_timeout_s: float = 10.0,
) -> StreamTransport:
    """Connect to ``host:port``.

    Raises:
        ConnectionClosed: refused, unreachable, or not connected within the timeout.
    """
    limit = frames_for(framing, limits.max_message_bytes).stream_limit()
    try:
        async with asyncio.timeout(connect_timeout_s):
            reader, writer = await asyncio.open_connection(host, port, limit=limit)
    except TimeoutError:
        raise ConnectionClosed(
            f"no TCP connection to {host}:{port} within {connect_timeout_s:g} s"
        ) from None
    except OSError as exc:
        raise ConnectionClosed(f"cannot connect to {host}:{port}: {exc}") from None
    return _transport(reader, writer, framing, limits)


class TcpListener:
    """Accepts TCP connections; each becomes a transport returned by :meth:`accept`.

    At most ``backlog`` accepted connections wait to be taken; beyond that new
    connections are closed at once rather than buffered without bound.
    """

    def __init__(self, framing: Framing, limits: DecodeLimits, backlog: int) -> None:
        self._framing = framing
        self._limits = limits
        self._accepted: asyncio.Queue[StreamTransport] = asyncio.Queue(backlog)
        self._server: asyncio.Server | None = None

    @classmethod
    async def start(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        framing: Framing = Framing.NEWLINE,
        limits: DecodeLimits = DEFAULT_LIMITS,
        backlog: int = 128,
    ) -> TcpListener:
        """Listen on ``host:port`` (port 0 picks a free one; see :attr:`port`)."""
        listener = cls(framing, limits, backlog)
        limit = frames_for(framing, limits.max_message_bytes).stream_limit()
        listener._server = await asyncio.start_server(
            listener._on_connection, host, port, limit=limit
        )
        logger.info("TCP listener on %s:%d (%s framing)", host, listener.port, framing)
        return listener

    @property
    def port(self) -> int:
        assert self._server is not None
        assert self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        transport = _transport(reader, writer, self._framing, self._limits)
        try:
            self._accepted.put_nowait(transport)
        except asyncio.QueueFull:
            logger.warning("TCP accept backlog full; closing a new connection")
            await transport.close()

    async def accept(self) -> StreamTransport:
        """The next accepted connection (waits for one)."""
        return await self._accepted.get()

    async def close(self) -> None:
        """Stop listening and close connections nobody took."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()
        while not self._accepted.empty():
            await self._accepted.get_nowait().close()
