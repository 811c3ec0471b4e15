"""An official-SDK server on Streamable HTTP, run by tests as a remote pool's upstream.

``python -m tests.cluster.remote_upstream [PORT]`` serves on ``127.0.0.1:PORT`` (a free
port when 0 or omitted) and prints ``listening on PORT`` once it accepts connections.

Besides plain tools it records what reached it: ``headers_seen`` returns the
authorization-like headers of every HTTP request it was sent, so a test can tell which
credentials crossed; ``grow`` adds a tool and announces ``tools/list_changed``.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Header names a test looks for: the configured upstream credential and what a caller
# might try to smuggle through.
_WATCHED = ("authorization", "x-upstream-key", "x-caller")

server = MCPServer("remote-upstream")
_seen: list[dict[str, str]] = []


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


_naps = {"now": 0, "peak": 0}


@server.tool()
async def nap(seconds: float) -> str:
    """Sleep, then answer (a slow tool); counts the naps running at once."""
    _naps["now"] += 1
    _naps["peak"] = max(_naps["peak"], _naps["now"])
    try:
        await asyncio.sleep(seconds)
    finally:
        _naps["now"] -= 1
    return f"slept {seconds}"


@server.tool()
def peak_naps() -> int:
    """The most naps that ever ran at once."""
    return _naps["peak"]


@server.tool()
def headers_seen() -> list[dict[str, str]]:
    """The watched headers of every HTTP request received so far, in order."""
    return list(_seen)


_forgotten: set[str] = set()


@server.tool()
def forget_my_session(ctx: Context) -> str:
    """From now on, answer this session's id with 404, as a server that expired it."""
    session = (ctx.headers or {}).get("mcp-session-id", "")
    _forgotten.add(session)
    return f"forgot {session}"


def _grown(text: str) -> str:
    return text.upper()


@server.tool()
async def grow(name: str, ctx: Context) -> str:
    """Add a tool called ``name`` and tell the client the tool list changed."""
    server.add_tool(_grown, name=name, description="added at run time")
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


class _RecordHeaders:
    """Records the watched headers; a call of the tool ``http_503`` gets an HTTP 503,
    as from a failing proxy in front of a server (the SDK never answers so itself), and
    a forgotten session gets 404 (``forget_my_session``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        _seen.append({name: headers[name] for name in _WATCHED if name in headers})
        if headers.get("mcp-session-id") in _forgotten:
            await _answer(send, 404, b"session not found")
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if b'"http_503"' in body:
            await _answer(send, 503, b"upstream overloaded")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # what follows: the client's disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def _serve(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    app: Any = _RecordHeaders(server.streamable_http_app(host="127.0.0.1"))
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    uvicorn_server = uvicorn.Server(config)
    sock.listen(128)
    print(f"listening on {sock.getsockname()[1]}", flush=True)
    await uvicorn_server.serve(sockets=[sock])


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
