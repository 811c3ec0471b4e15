"""Clients that vanish mid-request cost the gateway nothing: no traceback, no session.

A client that resets its connection is normal on the internet, and the SDK's Streamable
HTTP transport handles it badly in two ways (measured: 2,000 resets in 0.3 s left 1,000
tracebacks, ~100 MiB and a 17 s stall behind them):

* a reset while the body is still arriving raises ``ClientDisconnect`` inside the SDK,
  which logs it with a traceback and answers a client that is gone;
* a reset after a complete ``initialize`` leaves a session nobody knows the id of: it
  keeps its tasks and streams until the SDK's idle timeout (30 minutes).

:class:`DisconnectGuard` sits between the policy guards and the SDK app. It reads a
POST's body before the SDK sees the request (up to the body cap; beyond it the SDK's
own 413 applies), so a reset mid-body ends the request here with a DEBUG line. When the
client is gone before the answer to a request that created a session was complete, it
ends that session through the SDK's own DELETE, as a client would.

A client that trickles its body (slowloris) would hold its request, and the connection,
forever: the body must arrive within ``read_timeout_s`` or the request is refused with
408 and a JSON-RPC error (the door audits it). The head has its deadline in
:mod:`cluster.gateway.slow_clients`.
"""

from __future__ import annotations

import asyncio
import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cluster.gateway.policy.http_guards import REFUSED
from transports.errors import INVALID_REQUEST

__all__ = ["DisconnectGuard"]

logger = logging.getLogger(__name__)

_SESSION_HEADER = b"mcp-session-id"


class _ClientGone(Exception):
    pass


class DisconnectGuard:
    """ASGI middleware for the MCP path; see the module docstring.

    Args:
        app: the SDK's Streamable HTTP app.
        path: the MCP endpoint's path (other paths pass through untouched).
        max_body_bytes: the most it buffers; a larger body streams on to ``app``.
        read_timeout_s: how long the body may take to arrive (408 after that).
    """

    def __init__(
        self, app: ASGIApp, path: str, max_body_bytes: int, read_timeout_s: float = 30.0
    ) -> None:
        self._app = app
        self._path = path.rstrip("/") or "/"
        self._max_body_bytes = max_body_bytes
        self._read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or (scope["path"].rstrip("/") or "/") != self._path
        ):
            await self._app(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self._read_timeout_s):
                buffered = await self._read_body(receive)
        except _ClientGone:
            logger.debug("client left during its request body: nothing to answer")
            return
        except TimeoutError:
            await self._too_slow(scope, send)
            return
        state = _Exchange(receive, buffered)
        await self._app(scope, state.receive, state.wrap_send(send))
        opened_here = not any(name == _SESSION_HEADER for name, _ in scope["headers"])
        if state.gone_before_answer and opened_here and state.session_id is not None:
            logger.debug("client left before its session id arrived: ending that session")
            await self._end_session(scope, state.session_id)

    async def _too_slow(self, scope: Scope, send: Send) -> None:
        scope.setdefault("state", {})[REFUSED] = "body_timeout"
        message = f"request body not received within {self._read_timeout_s:g} s"
        error = {"code": INVALID_REQUEST, "message": message}
        body = json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # the rest of a trickled body is not worth reading
        ]
        await send({"type": "http.response.start", "status": 408, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _read_body(self, receive: Receive) -> list[Message]:
        """The body's messages (up to just over the cap: the rest streams on)."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            messages.append(message)
            size += len(message.get("body", b""))
            if not message.get("more_body", False) or size > self._max_body_bytes:
                return messages

    async def _end_session(self, scope: Scope, session_id: bytes) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-length",)]
        delete = {
            **scope,
            "method": "DELETE",
            "headers": [*headers, (_SESSION_HEADER, session_id)],
        }

        async def no_body() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def discard(message: Message) -> None:
            return None

        try:
            await self._app(delete, no_body, discard)
        except Exception:  # the idle timeout still ends it
            logger.debug("could not end an abandoned session", exc_info=True)


class _Exchange:
    """One request's replayed body, and what the response and the client did."""

    def __init__(self, receive: Receive, buffered: list[Message]) -> None:
        self._receive = receive
        self._buffered = buffered
        self.session_id: bytes | None = None
        self.answered = False
        self.gone_before_answer = False

    async def receive(self) -> Message:
        if self._buffered:
            return self._buffered.pop(0)
        message: Message = await self._receive()
        # Once the answer is complete, servers report a disconnect whatever the client
        # did: only one heard before that says the client left without its answer.
        if message["type"] == "http.disconnect" and not self.answered:
            self.gone_before_answer = True
        return message

    def wrap_send(self, send: Send) -> Send:
        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", []):
                    if name.lower() == _SESSION_HEADER:
                        self.session_id = value
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                self.answered = True
            await send(message)

        return tracking_send
