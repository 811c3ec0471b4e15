"""A small MCP-shaped HTTP endpoint on 127.0.0.1 for the edge client's tests.

It answers 2026-07-28 stateless ``tools/call`` (``append``: records the key it was given,
once per run, and answers it) and ``server/discover``, checks the per-request headers
and ``_meta`` envelope the era requires, and - like the bus with idempotency keys -
runs a keyed call once and answers a resend from what it stored. :meth:`cut` stops it
(connections are refused), :meth:`restore` serves again on the same port.

Scripted faults, per tool key: ``fail_after_run`` (the call runs, then the answer is lost
as an HTTP 500: the client cannot know it ran) and ``refuse_once`` (a JSON-RPC error
code answered once before the call runs).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from tests.waiting import wait_until

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
VERSION = "2026-07-28"
TTL_S = 86_400


@dataclass
class Seen:
    """One POST as the server read it."""

    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def key(self) -> str:
        return str(self.body["params"]["arguments"]["key"])

    @property
    def idempotency_key(self) -> str:
        return str(self.body["params"]["_meta"]["io.raybus/idempotency-key"])


@dataclass
class Behaviour:
    token: str | None = None
    fail_after_run: set[str] = field(default_factory=set)
    refuse_once: dict[str, int] = field(default_factory=dict)
    ttl_s: int = TTL_S  # advertised as the io.raybus/idempotency extension's ttlS


class CuttableServer:
    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.runs: list[str] = []  # the side effect: one entry per run of ``append``
        self.calls: list[Seen] = []
        self._answers: dict[str, dict[str, Any]] = {}  # by idempotency key
        probe = socket.create_server(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def restore(self) -> None:
        """Serve on the port (again)."""
        sock = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR on POSIX
        config = uvicorn.Config(self._app, log_level="warning", lifespan="off", interface="asgi3")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        server = self._server
        await wait_until(lambda: server.started, 30)

    async def cut(self) -> None:
        """Stop serving: new connections are refused, open ones closed."""
        assert self._server is not None
        assert self._task is not None
        self._server.should_exit = True
        self._server.force_exit = True
        async with asyncio.timeout(30):
            await self._task
        self._server = None

    async def _app(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        if self.behaviour.token and headers.get("authorization") != (
            f"Bearer {self.behaviour.token}"
        ):
            await _reply(send, 401, b"")
            return
        body = json.loads(b"".join(chunks))
        problem = _envelope_problem(headers, body)
        if problem is not None:
            await _reply(send, 400, json.dumps({"error": problem}).encode())
            return
        if body["method"] == "server/discover":
            extensions = {"io.raybus/idempotency": {"ttlS": self.behaviour.ttl_s}}
            await _json(send, body["id"], {"result": {"capabilities": {"extensions": extensions}}})
            return
        seen = Seen(headers, body)
        self.calls.append(seen)
        refused = self.behaviour.refuse_once.pop(seen.key, None)
        if refused is not None:
            await _json(send, body["id"], {"error": {"code": refused, "message": "not now"}})
            return
        answer = self._answers.get(seen.idempotency_key)
        if answer is None:
            self.runs.append(seen.key)
            answer = {"result": {"content": [], "structuredContent": {"result": seen.key}}}
            self._answers[seen.idempotency_key] = answer
            if seen.key in self.behaviour.fail_after_run:
                self.behaviour.fail_after_run.discard(seen.key)
                await _reply(send, 500, b"lost")
                return
        await _json(send, body["id"], answer)


def _envelope_problem(headers: dict[str, str], body: dict[str, Any]) -> str | None:
    meta = body.get("params", {}).get("_meta", {})
    if meta.get("io.modelcontextprotocol/protocolVersion") != VERSION:
        return "protocol version missing from _meta"
    if "io.modelcontextprotocol/clientCapabilities" not in meta:
        return "client capabilities missing from _meta"
    if headers.get("mcp-protocol-version") != VERSION:
        return "MCP-Protocol-Version header"
    if headers.get("mcp-method") != body.get("method"):
        return "Mcp-Method header"
    name = body["params"].get("name")
    if name is not None and headers.get("mcp-name") != name:
        return "Mcp-Name header"
    if "application/json" not in headers.get("accept", ""):
        return "Accept header"
    return None


async def _json(send: Send, request_id: Any, member: dict[str, Any]) -> None:
    payload = json.dumps({"jsonrpc": "2.0", "id": request_id, **member}).encode()
    await _reply(send, 200, payload, b"application/json")


async def _reply(send: Send, status: int, payload: bytes, kind: bytes = b"text/plain") -> None:
    headers = [(b"content-type", kind), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
