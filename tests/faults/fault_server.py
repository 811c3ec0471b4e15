"""A pool server for the worker fault tests: tools that misbehave on purpose.

Name it as a pool's ``server:`` (``tests.faults.fault_server:server``); Ray workers can
import ``tests`` because the repository root is on their path. The faults live here, in
a test-only server, never in raybus: a tool that blocks its worker's event loop, one that
kills its process, one with a side effect to count.

Every tool answers the ``key`` it was given (structured content ``{"result": key}``), so
the shared checker (:mod:`tests.faults.history`) sees a crossed answer.
"""

from __future__ import annotations

import asyncio
import os
import time

import mcp_types as types
from mcp.server.mcpserver import MCPServer

__all__ = ["server"]

server = MCPServer("faults")

# Safe to run again: the router re-queues it once when its worker is lost.
_REPEATABLE = types.ToolAnnotations(read_only_hint=True)


@server.tool(annotations=_REPEATABLE)
async def lookup(key: str, seconds: float = 0.0) -> str:
    """A read-only call taking ``seconds``: the router may run it again after a crash."""
    await asyncio.sleep(seconds)
    return key


@server.tool()
async def say(key: str, seconds: float = 0.0) -> str:
    """Like ``lookup`` but not declared safe to repeat: a lost call answers 1004."""
    await asyncio.sleep(seconds)
    return key


@server.tool()
async def append(key: str, path: str, seconds: float = 0.0) -> str:
    """The side effect first (``key`` appended to ``path``: one line per run), then
    ``seconds`` of work: a worker killed in that window ran the call, unanswered."""
    with open(path, "a", encoding="utf-8") as runs:  # noqa: ASYNC230 - one short line
        runs.write(key + "\n")
    await asyncio.sleep(seconds)
    return key


@server.tool()
async def stall(key: str, seconds: float) -> str:
    """Block the worker's whole event loop for ``seconds``: no heartbeat, no call, no
    cancellation gets through (the bug of an async tool calling blocking code)."""
    time.sleep(seconds)  # noqa: ASYNC251, TID251 - blocking the loop is the fault
    return key


@server.tool(annotations=_REPEATABLE)
async def poison(key: str, path: str) -> str:
    """Crash the worker every time (after appending ``key`` to ``path``, to count the
    attempts). Declared read-only, so the router does retry it: the bound is tested."""
    with open(path, "a", encoding="utf-8") as attempts:  # noqa: ASYNC230 - one short line
        attempts.write(key + "\n")
    os._exit(23)  # closed (flushed) above: os._exit flushes nothing
