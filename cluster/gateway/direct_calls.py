"""2026-07-28 tool calls served without the SDK's per-request machinery.

Profiled under 64 official clients calling ``echo``, the gateway spent most of its CPU
in the SDK's Streamable HTTP path for each stateless-era request: Starlette's routing
and exception layers, the session manager, a task group, the OpenTelemetry middleware,
pydantic models of the request, the params, the result and the response. The
bus forwards the call and a worker's server does the protocol work again, so at the
gateway all of it is overhead.

:class:`DirectToolCalls` sits in front of the SDK's app and takes a request only when
it is a well-formed 2026-07-28 ``tools/call`` that passes the SDK's own inbound checks
(the header/envelope ladder, duplicate routing headers, params schema, Mcp-Param
headers): the SDK's functions make those decisions, on the body the door has already
parsed. Anything else, every rejection included, goes on to the SDK unchanged, so
errors read exactly as before. The call itself runs through the same policy chain and
result shaping as the SDK path (:meth:`Gateway.call_tool_directly`).

The answer follows the SDK's single-exchange rules: JSON when the call ends before it
says anything; ``text/event-stream`` from the first notification (progress, logs) or
after the keep-alive interval, with the final response as the last event; a client
that disconnects cancels the call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import MutableMapping
from typing import Any, Final

from mcp.server.runner import modern_error_data
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    MCP_PARAM_HEADER_PREFIX,
    InboundModernRoute,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp_types.methods import validate_client_request
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from cluster.gateway.policy.http_guards import CLIENT_MESSAGE, PRINCIPAL
from cluster.gateway.server import Gateway
from cluster.gateway.tracing import incoming_trace
from transports.envelope import ANONYMOUS
from transports.tracecontext import TraceContext

__all__ = ["DirectToolCalls"]

logger = logging.getLogger(__name__)

_MODERN: Final = frozenset(v.encode() for v in MODERN_PROTOCOL_VERSIONS)
_PARAM_PREFIX: Final = MCP_PARAM_HEADER_PREFIX.lower()
# The SDK's deferral window before it commits a silent call to SSE and starts pinging
# (``_SSE_PING_INTERVAL`` in its single-exchange module, private there).
SSE_KEEPALIVE_S: Final = 15.0
_JSON_HEADERS: Final = [(b"content-type", b"application/json")]
_SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
]


def _dumps(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def _sse_event(message: dict[str, Any]) -> bytes:
    return b"event: message\r\ndata: " + _dumps(message) + b"\r\n\r\n"


def _accepts_json_and_sse(accept: str) -> bool:
    # The SDK's rule (check_accept_headers), on the raw header: both, or a wildcard.
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    if "*/*" in types:
        return True
    return bool(types & {"application/json", "application/*"}) and bool(
        types & {"text/event-stream", "text/*"}
    )


class DirectToolCalls:
    """ASGI middleware in front of the SDK's Streamable HTTP app; module docstring."""

    def __init__(self, app: ASGIApp, gateway: Gateway, path: str) -> None:
        self._app = app
        self._gateway = gateway
        self._path = path.rstrip("/") or "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        taken = await self._take(scope)
        if taken is None:
            await self._app(scope, receive, send)
            return
        message, version = taken
        state: MutableMapping[str, Any] = scope["state"]
        principal = state.get(PRINCIPAL)
        parents: list[str] = []
        states: list[str] = []
        for key, value in scope["headers"]:
            if key == b"traceparent":
                parents.append(value.decode("latin-1"))
            elif key == b"tracestate":
                states.append(value.decode("latin-1"))
        trace = incoming_trace(message["params"].get("_meta"), parents, states)
        await _Exchange(self._gateway, message, send).run(
            principal if isinstance(principal, str) else ANONYMOUS, version, state, receive, trace
        )

    async def _take(self, scope: Scope) -> tuple[dict[str, Any], str] | None:
        """The request and its version when this path serves it, else None."""
        if scope["type"] != "http" or (scope["path"].rstrip("/") or "/") != self._path:
            return None
        state = scope.get("state")
        message = state.get(CLIENT_MESSAGE) if isinstance(state, dict) else None
        if not isinstance(message, dict) or message.get("method") != "tools/call":
            return None
        raw = scope["headers"]
        if not any(k == b"mcp-protocol-version" and v in _MODERN for k, v in raw):
            return None
        # Refreshed here (within the catalog TTL) so that the SDK's synchronous
        # Mcp-Param hook reads a fresh index too when a request goes on to it.
        await self._gateway.tools_by_name()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw}
        if not _accepts_json_and_sse(headers.get("accept", "")):
            return None
        if find_duplicated_routing_header(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in raw
        ):
            return None
        verdict = classify_inbound_request(message, headers=headers)
        if not isinstance(verdict, InboundModernRoute):
            return None
        params = message.get("params")
        try:
            validate_client_request("tools/call", verdict.protocol_version, params)
        except ValidationError:
            return None
        assert isinstance(params, dict)  # the schema says so
        # Starlette's multi-valued view, as the SDK passes it: a repeated Mcp-Param
        # header must be seen twice to be refused.
        if not self._param_headers_fit(params, Headers(scope=scope)):
            return None
        return message, verdict.protocol_version

    def _param_headers_fit(self, params: dict[str, Any], headers: Headers) -> bool:
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict):
            return False
        if not arguments and not any(h.startswith(_PARAM_PREFIX) for h in headers):
            return True
        schema = self._gateway.input_schema(str(params["name"]))
        return schema is None or validate_mcp_param_headers(schema, arguments, headers) is None


class _Exchange:
    """One request's answer: JSON, or SSE once the call has said something."""

    def __init__(self, gateway: Gateway, message: dict[str, Any], send: Send) -> None:
        self._gateway = gateway
        self._id = message["id"]
        self._params: dict[str, Any] = message["params"]
        self._send = send
        self._events: list[bytes] = []
        self._streaming = False
        # Resolved by whatever happens next (an event, the call's end, the client
        # leaving): one future per wait instead of a task per source.
        # Its result says whether the wait ran out (a keep-alive ping is due).
        self._kick: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def _wake(self, *_: object) -> None:
        if not self._kick.done():
            self._kick.set_result(False)

    def _ping_due(self) -> None:
        if not self._kick.done():
            self._kick.set_result(True)

    async def run(
        self,
        principal: str,
        version: str,
        state: MutableMapping[str, Any],
        receive: Receive,
        trace: TraceContext | None,
    ) -> None:
        call = asyncio.ensure_future(
            self._gateway.call_tool_directly(
                principal,
                version,
                self._params,
                state,
                self._notify,
                trace=trace,
                request_id=self._id,
            )
        )
        watcher = asyncio.ensure_future(_client_gone(receive))
        call.add_done_callback(self._wake)
        watcher.add_done_callback(self._wake)
        try:
            await self._answer(call, watcher)
        finally:
            watcher.cancel()
            if not call.done():  # the client left: cancelling reaches the worker
                call.cancel()
                await asyncio.gather(call, return_exceptions=True)

    async def _notify(self, notification: dict[str, Any]) -> None:
        self._events.append(_sse_event(notification))
        self._wake()

    async def _answer(
        self, call: asyncio.Future[dict[str, Any]], watcher: asyncio.Future[None]
    ) -> None:
        loop = asyncio.get_running_loop()
        while not call.done():
            # A timer that only wakes, not asyncio.timeout: no cancellation to unwind
            # (measured: the timeout's bookkeeping was 1.5 % of a replica's CPU in B1).
            ping_timer = loop.call_later(SSE_KEEPALIVE_S, self._ping_due)
            try:
                ping_due = await self._kick
            finally:
                ping_timer.cancel()
            if ping_due:
                await self._stream(b": ping\r\n\r\n")  # silent past the window: keep it open
            self._kick = loop.create_future()
            if watcher.done():
                return
            await self._flush_events()
        await self._flush_events()
        status, response = _response(self._id, call)
        if self._streaming:
            await self._send({"type": "http.response.body", "body": _sse_event(response)})
            return
        body = _dumps(response)
        headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body})

    async def _flush_events(self) -> None:
        events, self._events = self._events, []
        for chunk in events:
            await self._stream(chunk)

    async def _stream(self, chunk: bytes) -> None:
        if not self._streaming:
            self._streaming = True
            await self._send(
                {"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS}
            )
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})


def _response(request_id: Any, call: asyncio.Future[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """The JSON-RPC response and its HTTP status, as the SDK's single-exchange path maps them."""
    exc = call.exception()
    if exc is None:
        return 200, {"jsonrpc": "2.0", "id": request_id, "result": call.result()}
    # The SDK's own mapping (MCPError, ValidationError, anything else as internal).
    data = modern_error_data(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
    error = data.model_dump(mode="json", exclude_none=True)
    status = ERROR_CODE_HTTP_STATUS.get(error["code"], 200)
    return status, {"jsonrpc": "2.0", "id": request_id, "error": error}


async def _client_gone(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
