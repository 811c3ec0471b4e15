"""A hosted SDK server's sync tools run on raybus's threads, with one hop instead of anyio's.

The SDK (v2) runs a sync tool body with ``anyio.to_thread.run_sync``. Before the hop that
yields to the event loop twice (a checkpoint, then the thread limiter's), and every yield
resumes the call's whole coroutine chain, some twenty frames of the SDK's serving and
middleware. Measured on the bench's Kafka request-reply (64 callers, a bus of 2 workers,
``echo`` a sync tool, 8 s rounds at steady state): the workers spent 0.60-0.68 ms of CPU
a call with the SDK's hop and 0.46-0.52 ms with this one (0.48-0.52 with the tool
written ``async``, no hop at all); 1,410-1,640 calls/s became 2,070-2,360.

:func:`take_over_sync_tools` replaces each sync tool's body, in the worker's own copy of
the server, with an ``async`` one that awaits the original on a worker thread through a
plain :class:`~concurrent.futures.ThreadPoolExecutor`: the only suspension is the wait for
the result. What the SDK's hop gives a tool body, it keeps:

- the body never runs on the event loop thread, and at most :data:`MAX_THREADS` (anyio's
  default limit) run at once; more wait their turn;
- the body sees the caller's context variables (a copy, as anyio makes);
- ``anyio.from_thread.run(...)`` and ``from_thread.run_sync`` work in the body (a sync tool
  reporting progress through its ``Context`` needs them): each call claims the thread for
  the caller's loop as anyio's own worker threads do. That needs one name anyio keeps
  private (its thread-locals); where it is missing nothing is taken over and the SDK's hop
  stays.

One difference: a call cancelled while its body runs returns at once (asyncio's
``to_thread`` semantics) and the body runs on to its end on its thread, still counted
against :data:`MAX_THREADS`; anyio's hop holds the cancelled call until the body ends.
A body cancelled before it started never runs, as with anyio.

Tools added to the server later (``add_tool`` at run time) keep the SDK's hop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio.lowlevel
from mcp.server.mcpserver import MCPServer

__all__ = ["MAX_THREADS", "take_over_sync_tools"]

logger = logging.getLogger(__name__)

MAX_THREADS = 40  # anyio's default thread limit, which the SDK's hop uses
_THREAD_PREFIX = "raybus-tool"
_TAKEN_OVER = "__raybus_sync_tool__"  # marks a body this module wrote (never wrapped twice)


def _anyio_thread_state() -> threading.local | None:
    """anyio's worker-thread state, what ``anyio.from_thread`` reads (see the docstring)."""
    try:
        from anyio._core import _eventloop
    except ImportError:  # pragma: no cover - an anyio without it: the SDK's hop stays
        return None
    state = getattr(_eventloop, "threadlocals", None)
    return state if isinstance(state, threading.local) else None


_ANYIO_THREAD_STATE = _anyio_thread_state()
_executor: ThreadPoolExecutor | None = None
_loop_tokens: dict[asyncio.AbstractEventLoop, anyio.lowlevel.EventLoopToken] = {}


def take_over_sync_tools(server: object) -> int:
    """Run ``server``'s sync tools on raybus's threads (see the module docstring).

    Returns how many tools were taken over: 0 for a server that is not an ``MCPServer``
    (a low-level ``Server`` has no tool bodies to see), when the SDK's or anyio's
    internals this needs are not there, and when it was done before.
    """
    manager = getattr(server, "_tool_manager", None)
    thread_state = _ANYIO_THREAD_STATE
    if not isinstance(server, MCPServer) or manager is None or thread_state is None:
        return 0
    count = 0
    for tool in manager.list_tools():
        if tool.is_async or getattr(tool.fn, _TAKEN_OVER, False):
            continue
        tool.fn = _off_the_loop(tool.fn, thread_state)
        tool.is_async = True
        count += 1
    if count:
        logger.debug("%d sync tools of %s run on raybus's threads", count, server.name)
    return count


def _off_the_loop(body: Callable[..., Any], thread_state: threading.local) -> Callable[..., Any]:
    """An async tool body that awaits ``body`` on a worker thread."""

    # functools.wraps keeps the signature the SDK reads (inspect follows __wrapped__).
    @functools.wraps(body)
    async def on_a_worker_thread(**arguments: Any) -> Any:
        loop = asyncio.get_running_loop()
        token = _loop_tokens.get(loop)
        if token is None:
            token = _loop_tokens[loop] = anyio.lowlevel.current_token()
            _forget_closed_loops()
        context = contextvars.copy_context()
        call = functools.partial(_run_body, thread_state, token, context, body, arguments)
        return await loop.run_in_executor(_threads(), call)

    setattr(on_a_worker_thread, _TAKEN_OVER, True)
    return on_a_worker_thread


def _run_body(
    thread_state: threading.local,
    token: anyio.lowlevel.EventLoopToken,
    context: contextvars.Context,
    body: Callable[..., Any],
    arguments: dict[str, Any],
) -> Any:
    # What anyio's worker thread sets for the body: the loop ``from_thread`` calls into,
    # and no cancel scope to check (``from_thread.check_cancelled`` then never raises).
    thread_state.current_token = token
    thread_state.current_cancel_scope = None
    return context.run(body, **arguments)


def _threads() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix=_THREAD_PREFIX)
    return _executor


def _forget_closed_loops() -> None:
    # A process that runs loop after loop (tests) must not keep every one alive.
    for loop in [loop for loop in _loop_tokens if loop.is_closed()]:
        del _loop_tokens[loop]
