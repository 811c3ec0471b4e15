"""An official-SDK MCP server exercising what the bus must carry end to end.

Tools that echo, sleep (cancellable, leaving a marker file when cancelled), report
progress, log, ask the client to sample, fail, and count their own calls; a resource and
a prompt. Tests, benchmarks and notebooks host it by import path
(``cluster.examples.testkit:server``) or run it on stdio (``python -m
cluster.examples.testkit``).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("testkit")

_calls = {"count": 0}


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    _calls["count"] += 1
    return text


@server.tool()
def whoami() -> dict[str, int | str]:
    """The serving process id and thread, its Ray node (when on Ray) and its echo count."""
    info: dict[str, int | str] = {
        "pid": os.getpid(),
        "thread": threading.current_thread().name,
        "echo_calls": _calls["count"],
    }
    try:
        import ray

        if ray.is_initialized():
            info["node"] = ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    return info


@server.tool()
async def nap(seconds: float, marker: str = "") -> str:
    """Sleep; when cancelled, write ``marker`` (a file path) before giving up."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if marker:
            Path(marker).write_text("cancelled")  # noqa: ASYNC240 - tiny, and we are being cancelled
        raise
    return f"slept {seconds}"


@server.tool()
async def count_with_progress(steps: int, ctx: Context) -> int:
    """Report progress ``steps`` times, then return ``steps``."""
    for step in range(1, steps + 1):
        await ctx.report_progress(step, steps, f"step {step}")
    return steps


@server.tool()
async def shout(message: str, ctx: Context) -> str:
    """Log ``message`` at info level to the caller, then return it upper-cased."""
    await ctx.info(message)
    return message.upper()


@server.tool()
async def ask(question: str, ctx: Context) -> str:
    """Ask the caller's client to sample a model answer (server-to-client request)."""
    result = await ctx.session.create_message(
        [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=question))],
        max_tokens=50,
        related_request_id=ctx.request_id,
    )
    content = result.content
    return content.text if isinstance(content, types.TextContent) else str(content)


@server.tool()
async def dump_request(ctx: Context) -> str:
    """Everything this server received for this call, as JSON (for credential scans)."""
    return json.dumps({"params": dict(ctx.request_context.params or {})}, default=str)


@server.tool()
async def touch(uri: str, ctx: Context) -> str:
    """Announce that a resource changed (subscribers get notifications/resources/updated)."""
    await ctx.session.send_resource_updated(uri)
    return f"touched {uri}"


@server.tool()
async def record(path: str, token: str, seconds: float = 0.0) -> str:
    """Append ``token`` as a line to ``path`` (counts executions), after ``seconds``."""
    if seconds:
        await asyncio.sleep(seconds)
    with open(path, "a", encoding="utf-8") as out:  # noqa: ASYNC230 - one short line
        out.write(token + "\n")
    return token


@server.tool()
def die(code: int = 13) -> str:
    """Exit the serving process at once (crash tests: a worker lost mid-call)."""
    os._exit(code)


@server.tool()
def fail(reason: str) -> str:
    """Always raises, so the caller sees a tool error (isError)."""
    raise RuntimeError(reason)


@server.resource("testkit://greeting")
def greeting() -> str:
    """A fixed greeting."""
    return "hello from testkit"


@server.prompt()
def summarize(topic: str) -> str:
    """A prompt asking for a summary of ``topic``."""
    return f"Summarize {topic} in one sentence."


async def _subscribe(
    ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams
) -> types.EmptyResult:
    return types.EmptyResult()  # updates are announced by the `touch` tool


async def _unsubscribe(
    ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams
) -> types.EmptyResult:
    return types.EmptyResult()


# MCPServer has no public hook for resources/subscribe: register on its low-level server.
server._lowlevel_server.add_request_handler(
    "resources/subscribe", types.SubscribeRequestParams, _subscribe
)
server._lowlevel_server.add_request_handler(
    "resources/unsubscribe", types.UnsubscribeRequestParams, _unsubscribe
)


if __name__ == "__main__":
    server.run()
