"""MCP over WebSocket at ``/ws``: one JSON-RPC message per text frame.

Each connection is one MCP session of the handshake era, served by the same SDK server
(and so the same policy chain, as the principal the handshake authenticated) as
Streamable HTTP. A frame that is not a JSON-RPC message (the codec's checks: UTF-8,
depth, duplicate keys, NaN) gets a JSON-RPC error frame back, leaves an audit record, and
the connection stays open; frames over the gateway's size cap close it (uvicorn enforces
``ws_max_size``). Refused frames are counted by reason (``parse_error``,
``invalid_request``) for the gateway's metrics. A session authenticated by an OAuth
access token is closed (1008) when the token expires: the door sees it only once.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import anyio
from mcp.server.lowlevel import Server
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp_types import jsonrpc_message_adapter
from pydantic import ValidationError
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from cluster.gateway.policy.audit import AuditLog
from cluster.gateway.policy.http_guards import OAUTH_PRINCIPAL, PRINCIPAL, Refusals
from cluster.gateway.policy.oauth import TokenPrincipal
from transports.codec import DecodeLimits, error_response_for, message_from_json, parse_json
from transports.errors import InvalidMessage, InvalidRequest, MessageTooLarge, ParseError

__all__ = ["websocket_route"]

logger = logging.getLogger(__name__)


def websocket_route(
    server: Server[Any],
    path: str,
    limits: DecodeLimits,
    audit: AuditLog | None = None,
    refusals: Refusals | None = None,
) -> WebSocketRoute:
    def refused(websocket: WebSocket, error: InvalidMessage) -> str:
        if refusals is not None:
            refusals.refused("parse_error" if isinstance(error, ParseError) else "invalid_request")
        if audit is not None:
            state = websocket.scope.get("state", {})
            audit.write(
                {
                    "time": time.time(),
                    "principal": state.get(PRINCIPAL),
                    "method": None,
                    "tool": None,
                    "outcome": f"error {error.code}",
                    "latency_ms": 0.0,
                    "http": f"WEBSOCKET {path}",
                }
            )
        return _dump(error_response_for(error).to_json_dict())

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(
            subprotocol="mcp" if "mcp" in websocket.scope.get("subprotocols", []) else None
        )
        to_server_send, to_server_receive = anyio.create_memory_object_stream[
            SessionMessage | Exception
        ](64)
        from_server_send, from_server_receive = anyio.create_memory_object_stream[SessionMessage](
            64
        )

        async def pump_in() -> None:
            try:
                while True:
                    text = await websocket.receive_text()
                    try:
                        message = message_from_json(parse_json(text, limits))
                    except (InvalidMessage, MessageTooLarge) as exc:
                        error = exc if isinstance(exc, InvalidMessage) else InvalidRequest(str(exc))
                        await websocket.send_text(refused(websocket, error))
                        continue
                    try:
                        sdk = jsonrpc_message_adapter.validate_python(message.to_json_dict())
                    except ValidationError as exc:
                        invalid = InvalidRequest(str(exc), getattr(message, "id", None))
                        await websocket.send_text(refused(websocket, invalid))
                        continue
                    # The WebSocket is the request context, as the HTTP request is for
                    # Streamable HTTP: the policy chain reads the principal from it.
                    metadata = ServerMessageMetadata(request_context=websocket)
                    await to_server_send.send(SessionMessage(sdk, metadata=metadata))
            except WebSocketDisconnect:
                pass
            finally:
                await to_server_send.aclose()

        async def pump_out() -> None:
            async for item in from_server_receive:
                await websocket.send_text(
                    item.message.model_dump_json(by_alias=True, exclude_unset=True)
                )

        async def close_when_the_token_expires(valid_until: float) -> None:
            # The door checked the token once, at the handshake; a session must not
            # outlive it. 1008: policy violation (the client gets a new token, reconnects).
            await anyio.sleep(max(0.0, valid_until - time.time()))
            logger.info("closing a WebSocket session: its access token expired")
            await websocket.close(code=1008, reason="access token expired")
            group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(pump_in)
            group.start_soon(pump_out)
            principal = websocket.scope.get("state", {}).get(OAUTH_PRINCIPAL)
            if isinstance(principal, TokenPrincipal) and principal.valid_until is not None:
                group.start_soon(close_when_the_token_expires, principal.valid_until)
            await server.run(
                to_server_receive, from_server_send, server.create_initialization_options()
            )
            group.cancel_scope.cancel()

    return WebSocketRoute(path, endpoint)


def _dump(wire: dict[str, Any]) -> str:
    return json.dumps(wire, separators=(",", ":"))
