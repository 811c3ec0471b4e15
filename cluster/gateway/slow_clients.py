"""A deadline for each request's head: slow clients cannot hold the gateway's connections.

uvicorn times out nothing while a request arrives: its keep-alive timer covers only the
idle time between requests, and any byte received cancels it. A client that sends its
request line and headers one byte at a time (slowloris) holds a connection, a file
descriptor and a parser for as long as it likes; enough of them and nobody else gets
in. ASGI middleware cannot help, as it runs only once the head is complete.

:func:`head_deadline_protocol` is uvicorn's HTTP/1.1 protocol (httptools) with one timer
per connection, running from the connection's opening, and from the first byte of each
later request, until that request's head is complete. When it fires, a client that sent
part of a head gets ``408 Request Timeout``; one that sent nothing is closed quietly (an
answer it never asked for could be taken for the answer to a request it is just
sending). Idle keep-alive connections stay uvicorn's (``timeout_keep_alive``). The body
has its own deadline where the body is read
(:class:`~cluster.gateway.disconnects.DisconnectGuard`), so that refusal is audited.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["head_deadline_protocol"]


def head_deadline_protocol(timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, closing with 408 a head not complete within ``timeout_s``."""
    body = f"request head not received within {timeout_s:g} s\n".encode()
    answer = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )

    class HeadDeadlineProtocol(HttpToolsProtocol):
        _head_deadline: asyncio.TimerHandle | None = None
        _head_begun = False  # bytes of the awaited head arrived

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm(begun=False)

        def data_received(self, data: bytes) -> None:
            if self._head_deadline is None and self._awaiting_head():
                self._arm(begun=True)
            elif self._head_deadline is not None:
                self._head_begun = True
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _awaiting_head(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self, *, begun: bool) -> None:
            self._head_begun = begun
            self._head_deadline = self.loop.call_later(timeout_s, self._head_too_slow)

        def _disarm(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _head_too_slow(self) -> None:
            self._head_deadline = None
            if not self._awaiting_head() or self.transport.is_closing():
                return  # a request is being served: its head arrived in time
            if self._head_begun:
                self.transport.write(answer)
            self.transport.close()

    return HeadDeadlineProtocol
