"""The gateway's door: ASGI guards that run before the MCP SDK sees a request.

From the outside in:

* :class:`AuditDoor` writes the audit record of every HTTP request or WebSocket
  handshake that is refused before the policy chain ran (no or wrong token, foreign
  Host/Origin, oversize or unparseable body, the SDK's own 4xx answers), so every client
  request leaves exactly one record; it also counts each 4xx refusal by reason for the
  gateway's metrics (``raybus_gateway_refused_total``). A refusal the SDK sends with an
  empty body (405 for a GET in the 2026-07-28 era, 406 for a wrong Accept) gets a
  plain-text one saying why: a client should never have to guess.
* :class:`HostOriginGuard`: 403 for a foreign Host or Origin (DNS rebinding), on HTTP
  and on the WebSocket handshake; it also strips the whitespace around header values.
* :class:`BearerAuth`: 401 unless the bearer token's hash names a principal; the token
  stops here, only the principal's name travels on (in the ASGI scope's state).
* :class:`JsonBodyGuard`: a POSTed body must pass the project's codec checks (size,
  UTF-8, nesting depth, duplicate keys, NaN/Infinity, one message not a batch), answered
  with a JSON-RPC error (-32700 / -32600) and HTTP 400, or 413 for size. The SDK's own
  parser accepts duplicate keys (last wins) and NaN, which the bus cannot carry.
* :class:`RateLimitGate`: a request over its principal's (or tool's) rate limit gets
  HTTP 429 with ``Retry-After`` and a JSON-RPC error body, before the SDK's session
  machinery is touched: a flood of refused requests must cost next to nothing, or it
  slows every other client.

Guards tell the door why they refused through ``scope["state"]`` (:data:`REFUSED`); the
policy chain marks a request it audited (:data:`AUDITED`), the body guard records the
client's JSON-RPC method, id and tool (:data:`CLIENT_METHOD`, :data:`CLIENT_ID`,
:data:`CLIENT_TOOL`) and the parsed request (:data:`CLIENT_MESSAGE`), and the rate
gate marks a request it charged (:data:`RATE_CHARGED`) so the policy chain does not
charge it twice.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, MutableMapping
from http import HTTPStatus
from typing import Any, Protocol

from mcp.shared.exceptions import MCPError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cluster.gateway.policy.audit import AuditLog
from cluster.gateway.policy.oauth import TokenPrincipal, audit_fields
from cluster.gateway.policy.tokens import TokenTable
from transports.codec import DecodeLimits, message_from_json, parse_json
from transports.envelope import ANONYMOUS
from transports.errors import (
    INVALID_REQUEST,
    InvalidMessage,
    MessageTooLarge,
    ParseError,
)

__all__ = [
    "AUDITED",
    "CLIENT_ID",
    "CLIENT_MESSAGE",
    "CLIENT_METHOD",
    "CLIENT_RESPONSE_ID",
    "CLIENT_TOOL",
    "OAUTH_PRINCIPAL",
    "PRINCIPAL",
    "RATE_CHARGED",
    "REFUSED",
    "AuditDoor",
    "BearerAuth",
    "HostOriginGuard",
    "JsonBodyGuard",
    "RateLimitGate",
]

PRINCIPAL = "raybus_principal"  # set by BearerAuth: the authenticated principal
# Set by resource_server.OAuthBearerAuth: the token's TokenPrincipal (subject, client, scopes).
OAUTH_PRINCIPAL = "raybus_oauth_principal"
AUDITED = "raybus_audited"  # set by the policy chain once it wrote the request's record
REFUSED = "raybus_refused"  # set by a guard: why it refused the request
CLIENT_METHOD = "raybus_method"  # set by JsonBodyGuard: the JSON-RPC method the client sent
CLIENT_ID = "raybus_request_id"  # set by JsonBodyGuard: the JSON-RPC id of that request
CLIENT_TOOL = "raybus_tool"  # set by JsonBodyGuard: the tool a tools/call names
CLIENT_MESSAGE = "raybus_message"  # set by JsonBodyGuard: the request, parsed once
# Set by JsonBodyGuard: the id of a JSON-RPC response the client POSTed (an answer to a
# server-to-client request), for cluster.gateway.tasks_input.TaskInputGuard.
CLIENT_RESPONSE_ID = "raybus_response_id"
RATE_CHARGED = "raybus_rate_charged"  # set by RateLimitGate: its buckets were spent


class Refusals(Protocol):
    """Where the gateway counts what it refuses (``cluster.metrics``' GatewayRecorder)."""

    def refused(self, reason: str) -> None: ...


def _state(scope: Scope) -> MutableMapping[str, Any]:
    state: MutableMapping[str, Any] = scope.setdefault("state", {})
    return state


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes, extra: list[tuple[bytes, bytes]]
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + extra})
    await send({"type": "http.response.body", "body": body})


_WHY = {
    405: "this endpoint takes POST",
    406: "Accept must list application/json and text/event-stream",
}


def _explained(start: Message) -> tuple[Message, bytes]:
    """An empty 4xx answer's start and a plain-text body that says why."""
    status = int(start["status"])
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Refused"
    body = f"{status} {phrase}" + (f": {_WHY[status]}" if status in _WHY else "") + "\n"
    data = body.encode()
    kept = [(k, v) for k, v in start.get("headers", []) if k.lower() not in _BODY_HEADERS]
    headers = [*kept, (b"content-type", b"text/plain; charset=utf-8")]
    headers.append((b"content-length", str(len(data)).encode()))
    return {**start, "headers": headers}, data


_BODY_HEADERS = (b"content-length", b"content-type")


class AuditDoor:
    """ASGI middleware: one audit record for each request refused before the policy chain.

    A refusal is also counted in ``refusals`` by the reason a guard gave (whatever its
    status), or as ``http_<status>`` for the SDK's own 4xx (unknown session, wrong
    Accept, ...).
    """

    def __init__(self, app: ASGIApp, audit: AuditLog, refusals: Refusals | None = None) -> None:
        self._app = app
        self._audit = audit
        self._refusals = refusals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None
        accepted = False
        empty_refusal: Message | None = None  # held until its body shows it is empty

        async def watching_send(message: Message) -> None:
            nonlocal status, accepted, empty_refusal
            kind = message["type"]
            if empty_refusal is not None:
                start, empty_refusal = empty_refusal, None
                if kind == "http.response.body" and not message.get("body"):
                    start, body = _explained(start)
                    message = {**message, "body": body}
                await send(start)
            if kind == "http.response.start":
                status = message["status"]
                if status >= 400 and (b"content-length", b"0") in message.get("headers", []):
                    empty_refusal = message
                    return
            elif kind == "websocket.accept":
                accepted = True
            elif kind == "websocket.close" and not accepted and status is None:
                status = 403  # a close before accept is answered as HTTP 403
            elif kind == "websocket.http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, watching_send)
        finally:
            state = _state(scope)
            if status is not None and status >= 400 and not state.get(AUDITED):
                reason = state.get(REFUSED)
                # A guard's reason makes it a refusal whatever the status (an issuer
                # that is down is refused with 503); a bare 5xx is a failure, not one.
                if self._refusals is not None and (reason or status < 500):
                    self._refusals.refused(reason or f"http_{status}")
                record: dict[str, Any] = {
                    "time": time.time(),
                    "principal": state.get(PRINCIPAL),
                    "method": state.get(CLIENT_METHOD),
                    "tool": state.get(CLIENT_TOOL),
                    "outcome": f"refused {status}" + (f" {reason}" if reason else ""),
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                    "http": f"{scope.get('method', 'WEBSOCKET')} {scope.get('path', '')}",
                }
                token = state.get(OAUTH_PRINCIPAL)
                if isinstance(token, TokenPrincipal):  # refused after the token was verified
                    record.update(audit_fields(token))
                self._audit.write(record)


class BearerAuth:
    """ASGI middleware: 401 unless the bearer token's hash names a principal."""

    def __init__(self, app: ASGIApp, tokens: TokenTable, realm: str = "raybus") -> None:
        self._app = app
        self._tokens = tokens
        self._realm = realm

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        value = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = value.partition(" ")
        websocket = scope["type"] == "websocket"
        if scheme.lower() != "bearer" or not token.strip():
            await self._refuse(scope, send, None, websocket)
            return
        principal = self._tokens.principal_for(token.strip())
        if principal is None:
            await self._refuse(scope, send, "invalid_token", websocket)
            return
        _state(scope)[PRINCIPAL] = principal
        # The credential goes no further than this door: nothing behind it sees it.
        scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
        await self._app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send, error: str | None, websocket: bool) -> None:
        _state(scope)[REFUSED] = error or "authentication_required"
        if websocket:  # before accept, a close is answered as HTTP 403 by the server
            await send({"type": "websocket.close", "code": 1008})
            return
        challenge = f'Bearer realm="{self._realm}"' + (f', error="{error}"' if error else "")
        body = json.dumps({"error": error or "authentication_required"}).encode()
        await _respond(
            send, 401, body, b"application/json", [(b"www-authenticate", challenge.encode())]
        )


_OWS = (b" ", b"\t")


class HostOriginGuard:
    """ASGI middleware: 403 for a Host or Origin that is not ours (DNS rebinding).

    Patterns are ``host:port`` with ``*`` allowed as the port; Origins are matched the
    same way after their scheme. A request without an Origin (not a browser) passes the
    Origin check; every request must carry an allowed Host. ``Origin: null`` (sandboxed
    pages, file: URLs) is foreign.
    """

    def __init__(self, app: ASGIApp, hosts: list[str], origins: list[str]) -> None:
        self._app = app
        self._hosts = hosts
        self._origins = origins

    @staticmethod
    def _matches(value: str, patterns: list[str]) -> bool:
        for pattern in patterns:
            if pattern.endswith(":*"):
                name = pattern[:-2]
                if value == name or (
                    value.startswith(name + ":") and value[len(name) + 1 :].isdigit()
                ):
                    return True
            elif value == pattern:
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            raw = scope.get("headers") or []
            if any(v[:1] in _OWS or v[-1:] in _OWS for _, v in raw):
                # RFC 9110 5.5: a field value excludes surrounding whitespace. uvicorn's
                # C parser (httptools) keeps it, and the SDK compares Mcp-* values as is.
                raw = scope["headers"] = [(k, v.strip(b" \t")) for k, v in raw]
            headers = dict(raw)
            host = headers.get(b"host", b"").decode("latin-1")
            origin = headers.get(b"origin")
            if not self._matches(host, self._hosts) or (
                origin is not None and not self._matches(origin.decode("latin-1"), self._origins)
            ):
                _state(scope)[REFUSED] = "host_or_origin"
                if scope["type"] == "websocket":
                    # An HTTP response is not a valid answer to a WebSocket scope (the
                    # server turned it into a 500); a close before accept is a 403.
                    await send({"type": "websocket.close", "code": 1008})
                else:
                    body = b"Forbidden: Host or Origin not allowed"
                    await _respond(send, 403, body, b"text/plain", [])
                return
        await self._app(scope, receive, send)


class JsonBodyGuard:
    """ASGI middleware: a POSTed body passes the codec's checks before the SDK parses it.

    The body is read once (at most ``limits.max_message_bytes`` of it) and handed on
    unchanged.
    """

    def __init__(self, app: ASGIApp, limits: DecodeLimits) -> None:
        self._app = app
        self._limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self._app(scope, receive, send)
            return
        state = _state(scope)
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._limits.max_message_bytes:
                # Refused before the rest arrives: an oversize body is never buffered.
                state[REFUSED] = "body_too_large"
                too_large = MessageTooLarge(size, self._limits.max_message_bytes)
                error = {"code": INVALID_REQUEST, "message": str(too_large)}
                await _respond(send, 413, _error(error), b"application/json", [])
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            parsed = parse_json(body, self._limits)
            # The codec's JSON-RPC checks too: the SDK's own let a request without
            # "jsonrpc", or with a null, float, boolean, array or object id, run its
            # tool and echo that id (found by tests/faults, case 10).
            message_from_json(parsed)
        except InvalidMessage as exc:
            state[REFUSED] = "parse_error" if isinstance(exc, ParseError) else "invalid_request"
            answer = _error(exc.error_object(), exc.request_id)
            await _respond(send, 400, answer, b"application/json", [])
            return
        method = parsed.get("method")
        if isinstance(method, str) and "id" in parsed:
            state[CLIENT_METHOD] = method
            state[CLIENT_ID] = parsed["id"]
            state[CLIENT_MESSAGE] = parsed
            params = parsed.get("params")
            name = params.get("name") if isinstance(params, dict) else None
            if method == "tools/call" and isinstance(name, str):
                state[CLIENT_TOOL] = name
        elif method is None and "id" in parsed:
            state[CLIENT_RESPONSE_ID] = parsed["id"]
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only the disconnect is left

        await self._app(scope, replay, send)


RateRefusal = Callable[[str, str | None], MCPError | None]


class RateLimitGate:
    """ASGI middleware, inside :class:`JsonBodyGuard`: rate limits applied at the door.

    Args:
        app: the SDK's Streamable HTTP app.
        refusal: ``(principal, tool) -> error or None``; spends the request's tokens.

    A refused request never reaches the SDK (no session lookup, no task, no stream), so
    a principal hammering its limit costs the gateway one bucket lookup and one small
    response per request. The JSON-RPC error carries the request's id at HTTP 429; the
    SDK's client surfaces it as the call's error.
    """

    def __init__(self, app: ASGIApp, refusal: RateRefusal) -> None:
        self._app = app
        self._refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = _state(scope)
        if scope["type"] != "http" or CLIENT_METHOD not in state:
            await self._app(scope, receive, send)  # not a request: nothing to charge
            return
        principal = state.get(PRINCIPAL)
        refused = self._refusal(
            principal if isinstance(principal, str) else ANONYMOUS, state.get(CLIENT_TOOL)
        )
        state[RATE_CHARGED] = True
        if refused is None:
            await self._app(scope, receive, send)
            return
        state[REFUSED] = "rate_limited"
        data = refused.error.data if isinstance(refused.error.data, dict) else {}
        wait = data.get("retryAfterSeconds", 1)
        # Retry-After counts whole seconds (RFC 9110); the body has the precise wait.
        retry_after = str(max(1, math.ceil(wait if isinstance(wait, int | float) else 1)))
        body = _error(refused.error.model_dump(exclude_none=True), state.get(CLIENT_ID))
        headers = [(b"retry-after", retry_after.encode())]
        await _respond(send, 429, body, b"application/json", headers)


def _error(error: dict[str, Any], request_id: Any = None) -> bytes:
    # Without an id the request was not read far enough to trust one: null.
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "error": error}, separators=(",", ":")
    ).encode()
