"""2026-07-28 requests served straight into an in-process SDK server, one ``serve_one`` each.

A 2026-07-28 request carries its whole connection (protocol version, client info and
capabilities) in its ``_meta`` envelope, so it needs no session. The SDK's own HTTP entry
(``mcp/server/_streamable_http_modern.py``) serves one with ``serve_one`` and a
request-scoped dispatch context; :class:`ModernCalls` does the same for a worker, which
skips what the SDK's stream loop costs per call: the in-memory streams, the JSON-RPC
dispatcher's task spawning and a pydantic validate/dump of every message each way (CPU
per ``echo`` call, 64 concurrent, in-process: 0.58 ms before, 0.38 ms after).

What the server emits reaches the link exactly as the stream loop delivered it:

* request-scoped notifications (progress, logs, ``subscriptions/listen`` events) carry
  the request's id as their related id, connection-scoped ones none, and every one comes
  before the request's answer;
* a request the client cancelled is never answered, and its handler is stopped;
* errors map through the SDK's ``modern_error_data`` (its ladder for every modern entry),
  results are the dict ``serve_one`` returns, made JSON-safe as the stream's dump did;
* a call still running when the link closes is answered ``CONNECTION_CLOSED`` (-32000),
  as the dispatcher answers its in-flight requests when its stream ends.

One difference from the SDK's duplex loop, on purpose: the connection channel passes
change notifications (``notifications/*/list_changed``, ``resources/updated``) on to the
worker. The SDK's ``NotifyOnlyOutbound`` drops them there, because at 2026-07-28 a wire
client hears of changes only on a ``subscriptions/listen`` stream it opened. The worker
is no wire client but the server's host: a server written for sessions announces a
change on the session of the call that made it, and dropping that would leave the
worker's catalog stale (the worker re-reads its lists, and tells clients the way each
era expects). A server that publishes on its ``SubscriptionBus`` reaches the worker's own
listen stream as well; reading the lists twice changes nothing.

SDK name relied on that is not in its module's ``__all__`` (no public equivalent in mcp
2.3.0): ``mcp.server.runner.modern_error_data``, the shared error mapping; it is named
without an underscore.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeGuard

import anyio
from mcp.server.connection import Connection
from mcp.server.lowlevel import Server
from mcp.server.runner import ServerRunner, aclose_shielded, modern_error_data, serve_one
from mcp.shared.dispatcher import CallOptions, coerce_request_id
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.shared.inbound import InboundLadderRejection, classify_inbound_request
from mcp.shared.jsonrpc_dispatcher import (
    cancelled_request_id_from_params,
    progress_token_from_params,
)
from mcp.shared.message import MessageMetadata, ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp_types import CONNECTION_CLOSED, PROTOCOL_VERSION_META_KEY, ErrorData, RequestId
from mcp_types.version import LATEST_MODERN_VERSION
from pydantic_core import to_jsonable_python

from transports.codec import message_from_json
from transports.message import JSONRPCId, Notification, Request, Response, TransportMessage

__all__ = ["Emit", "ModernCalls", "is_modern_request"]

logger = logging.getLogger(__name__)

# What a link reads next: a message from the server and the request it relates to.
Emit = Callable[[TransportMessage, JSONRPCId | None], None]
CloseStream = Callable[[], Awaitable[None]]

# The stream loop's per-message transport, with the modern era's ban on server requests.
_TRANSPORT = TransportContext(kind="jsonrpc", can_send_request=False)
_CLOSE_WAIT_S = 5.0


def is_modern_request(message: TransportMessage) -> TypeGuard[Request]:
    """Does this request open its own 2026-07-28 connection (the SDK's era rule)?

    The protocol-version key in ``params._meta`` marks the era; ``initialize`` never does,
    even when a client stamps the envelope on it (``serve_dual_era_loop`` decides alike).
    """
    if not isinstance(message, Request) or message.method == "initialize":
        return False
    meta = message.params.get("_meta") if isinstance(message.params, dict) else None
    return isinstance(meta, dict) and PROTOCOL_VERSION_META_KEY in meta


def _notification(method: str, params: Mapping[str, Any] | None) -> Notification:
    if params is None:
        return Notification(method=method)
    return Notification(method=method, params=to_jsonable_python(dict(params), by_alias=True))


def _error_response(request_id: JSONRPCId, error: ErrorData) -> TransportMessage:
    # The stream loop's dump of a JSONRPCError, so an error reads the same on both paths.
    wire = error.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return message_from_json({"jsonrpc": "2.0", "id": request_id, "error": wire})


class _ConnectionChannel:
    """The connection-scoped channel: notifications with no related request."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> None:
        self._emit(_notification(method, params), None)


class _RequestContext:
    """A ``DispatchContext`` for one request: its notifications carry its id.

    Like the SDK's single-exchange context, it refuses server-to-client requests (the
    2026-07-28 era forbids them) and drops what a handler sends after it returned.
    """

    def __init__(
        self,
        request_id: RequestId | None,
        params: Mapping[str, Any] | None,
        metadata: MessageMetadata,
        emit: Emit,
    ) -> None:
        self._request_id = request_id
        self._progress_token = progress_token_from_params(params)
        self._metadata = metadata
        self._emit = emit
        self._cancel_requested: anyio.Event | None = None  # made on first use: rarely read
        self.cancelled = False
        self.closed = False

    @property
    def transport(self) -> TransportContext:
        return _TRANSPORT

    @property
    def can_send_request(self) -> bool:
        return False

    @property
    def request_id(self) -> RequestId | None:
        return self._request_id

    @property
    def message_metadata(self) -> MessageMetadata:
        return self._metadata

    @property
    def cancel_requested(self) -> anyio.Event:
        if self._cancel_requested is None:
            self._cancel_requested = anyio.Event()
            if self.cancelled:
                self._cancel_requested.set()
        return self._cancel_requested

    def cancel(self) -> None:
        self.cancelled = True
        if self._cancel_requested is not None:
            self._cancel_requested.set()

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> None:
        if self.closed:
            logger.debug("dropped %s: its request already finished", method)
            return
        self._emit(_notification(method, params), self._request_id)

    async def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        if self._progress_token is None:
            return
        params: dict[str, Any] = {"progressToken": self._progress_token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self.notify("notifications/progress", params)


class _Running:
    __slots__ = ("context", "request_id", "task")

    def __init__(self, request_id: JSONRPCId, context: _RequestContext) -> None:
        self.request_id = request_id
        self.context = context
        self.task: asyncio.Task[None] | None = None


class ModernCalls:
    """Runs 2026-07-28 requests on one server under one entered lifespan.

    Args:
        server: the low-level SDK server.
        lifespan_state: what the server's lifespan yielded (entered once by the owner).
        emit: receives every message the server sends, with its related request id.
    """

    def __init__(self, server: Server[Any], lifespan_state: Any, emit: Emit) -> None:
        self._server = server
        self._lifespan_state = lifespan_state
        self._emit = emit
        self._outbound = _ConnectionChannel(emit)  # change notifications included: see module
        self._running: dict[RequestId, _Running] = {}
        self._background: set[asyncio.Task[None]] = set()

    def start(self, request: Request, close_stream: CloseStream | None = None) -> None:
        """Serve ``request`` in its own task; its answer and notifications go to ``emit``.

        ``close_stream`` is what the server may call to close the client's SSE stream for
        this request (SEP-1699), as the SDK passes it in message metadata.
        """
        metadata = ServerMessageMetadata(close_sse_stream=close_stream) if close_stream else None
        params = request.params if isinstance(request.params, dict) else None
        running = _Running(request.id, _RequestContext(request.id, params, metadata, self._emit))
        key = coerce_request_id(request.id)
        # The SDK overwrites a duplicate in-flight id the same way (JSON-RPC ids are unique).
        self._running[key] = running
        running.task = asyncio.get_running_loop().create_task(self._serve(key, running, request))

    def cancel(self, notification: Notification) -> bool:
        """Stop the call a ``notifications/cancelled`` names; False if none is running.

        The call is never answered. The server's own notification handling still sees
        the cancellation, as it does over the SDK's stream loop.
        """
        params = notification.params if isinstance(notification.params, dict) else None
        request_id = cancelled_request_id_from_params(params)
        running = (
            self._running.pop(coerce_request_id(request_id), None)
            if request_id is not None
            else None
        )
        if running is None:
            return False
        running.context.cancel()
        if running.task is not None:
            running.task.cancel()
        self._spawn(self._observe(notification.method, params))
        return True

    def notify(self, notification: Notification) -> None:
        """Pass a client notification to the server as a 2026-07-28 connection does."""
        params = notification.params if isinstance(notification.params, dict) else None
        self._spawn(self._observe(notification.method, params))

    async def close(self) -> None:
        """Answer running calls ``CONNECTION_CLOSED``, stop them, and wait (bounded)."""
        running, self._running = list(self._running.values()), {}
        for call in running:
            call.context.cancel()
            self._emit(
                _error_response(
                    call.request_id, ErrorData(code=CONNECTION_CLOSED, message="Connection closed")
                ),
                None,
            )
        tasks = [c.task for c in running if c.task is not None] + list(self._background)
        for task in tasks:
            task.cancel()
        if tasks:
            # A sync tool's worker thread cannot be interrupted; do not wait for it forever.
            await asyncio.wait(tasks, timeout=_CLOSE_WAIT_S)

    async def _serve(self, key: RequestId, running: _Running, request: Request) -> None:
        context = running.context
        try:
            answer = await self._answer(context, request)
        except Exception as exc:  # noqa: BLE001 - the SDK's boundary: a failure is an answer
            answer = _error_response(request.id, modern_error_data(exc))
        finally:
            context.closed = True
            if self._running.get(key) is running:
                del self._running[key]
        if not context.cancelled:
            self._emit(answer, None)

    async def _answer(self, context: _RequestContext, request: Request) -> TransportMessage:
        params = request.params if isinstance(request.params, dict) else None
        # The SDK's modern ladder: the envelope's shape and version, before any handler.
        route = classify_inbound_request({"method": request.method, "params": params})
        if isinstance(route, InboundLadderRejection):
            error = MCPError(code=route.code, message=route.message, data=route.data).error
            return _error_response(request.id, error)
        connection = Connection.from_envelope(
            route.protocol_version,
            route.client_info,
            route.client_capabilities,
            outbound=self._outbound,
        )
        result = await serve_one(
            self._server,
            context,
            request.method,
            params,
            connection=connection,
            lifespan_state=self._lifespan_state,
        )
        return Response.success(request.id, to_jsonable_python(result, by_alias=True))

    async def _observe(self, method: str, params: Mapping[str, Any] | None) -> None:
        # As `_serve_modern_stream` does: a notification has no envelope, so it runs at
        # the latest modern version on a connection of its own.
        connection = Connection.from_envelope(
            LATEST_MODERN_VERSION, None, None, outbound=self._outbound
        )
        runner = ServerRunner(self._server, connection, self._lifespan_state)
        context = _RequestContext(None, None, None, self._emit)
        try:
            await runner.on_notify(context, method, params)
        finally:
            await aclose_shielded(connection)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._background.discard)
