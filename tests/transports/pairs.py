"""Connected transport pairs for the contract suite.

Adding a transport to the suite is one factory here plus one entry in ``PAIR_FACTORIES``.
``inject`` writes raw bytes as one frame from ``a`` to ``b``, bypassing every check on the
sending side, so the suite can feed the receiving side malformed and oversize frames.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from transports.base import Transport
from transports.codec import DecodeLimits
from transports.framing import Framing
from transports.memory import MemoryTransport
from transports.stdio import open_pipe_transport
from transports.stream import StreamTransport
from transports.tcp import TcpListener, connect_tcp

CONTRACT_LIMITS = DecodeLimits(max_message_bytes=64 * 1024, max_depth=32)

Inject = Callable[[bytes], Coroutine[Any, Any, None]]


@dataclass
class TransportPair:
    a: Transport
    b: Transport
    inject: Inject


PairFactory = Callable[[], AbstractAsyncContextManager["TransportPair"]]


def _stream_injector(sender: StreamTransport) -> Inject:
    async def inject(raw: bytes) -> None:
        sender._writer.write(sender._frames.encode(raw))
        await sender._writer.drain()

    return inject


@asynccontextmanager
async def memory_pair() -> AsyncIterator[TransportPair]:
    a, b = MemoryTransport.pair(limits=CONTRACT_LIMITS)

    async def inject(raw: bytes) -> None:
        await a._outbound.put((raw, None))

    try:
        yield TransportPair(a, b, inject)
    finally:
        await a.close()
        await b.close()


@asynccontextmanager
async def stdio_pipe_pair() -> AsyncIterator[TransportPair]:
    a_to_b_read, a_to_b_write = os.pipe()
    b_to_a_read, b_to_a_write = os.pipe()
    a = await open_pipe_transport(b_to_a_read, a_to_b_write, limits=CONTRACT_LIMITS)
    b = await open_pipe_transport(a_to_b_read, b_to_a_write, limits=CONTRACT_LIMITS)
    try:
        yield TransportPair(a, b, _stream_injector(a))
    finally:
        await a.close()
        await b.close()


def _tcp_pair(framing: Framing) -> PairFactory:
    @asynccontextmanager
    async def pair() -> AsyncIterator[TransportPair]:
        listener = await TcpListener.start(framing=framing, limits=CONTRACT_LIMITS)
        a = await connect_tcp("127.0.0.1", listener.port, framing=framing, limits=CONTRACT_LIMITS)
        b = await listener.accept()
        try:
            yield TransportPair(a, b, _stream_injector(a))
        finally:
            await a.close()
            await b.close()
            await listener.close()

    return pair


PAIR_FACTORIES: dict[str, PairFactory] = {
    "memory": memory_pair,
    "stdio": stdio_pipe_pair,
    "tcp-newline": _tcp_pair(Framing.NEWLINE),
    "tcp-length-prefixed": _tcp_pair(Framing.LENGTH_PREFIXED),
}
