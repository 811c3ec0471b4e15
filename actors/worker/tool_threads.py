"""A hosted SDK server's sync tools run on raybus's threads, with one hop instead of anyio's.

The SDK (v2) runs a sync tool body with ``anyio.to_thread.run_sync``. Before the hop that
yields to the event loop twice (a checkpoint, then the thread limiter's), and every yield
resumes the call's whole coroutine chain, some twenty frames of the SDK's serving and
middleware. Measured on the bench's Kafka request-reply (64 callers, a bus of 2 workers,
``echo`` a sync tool, 8 s rounds at steady state): the workers spent 0.60-0.68 ms of CPU
a call with the SDK's hop and 0.45-0.51 ms with this one (0.48-0.52 with the tool
written ``async``, no hop at all); 1,410-1,640 calls/s became 1,990-2,220.

:func:`take_over_sync_tools` replaces each sync tool's body, in the worker's own copy of
the server, with an ``async`` one that does what anyio's hop does, without the yields:

- it takes a token of the loop's default thread limiter (anyio's, 40 unless the server
  changed it, shared with the sync resources and prompts anyio still runs) without
  waiting; when none is free the call takes anyio's own hop, which waits for one;
- it runs the body on a worker thread with a copy of the caller's context variables and
  hands the outcome back as anyio does (a ``StopIteration`` becomes a ``RuntimeError``;
  every other exception reaches the SDK as it was raised, traceback included);
- it waits for the body inside a shielded cancel scope whose parent, the caller's scope,
  is the body's: a cancelled call (the SDK cancels a call's scope) is held until its body
  ends, ``anyio.from_thread.check_cancelled()`` in the body raises, and coroutines the body
  runs with ``anyio.from_thread.run`` (a sync tool reporting progress through its
  ``Context``) run in, and are cancelled with, that scope.

The last point uses two names anyio keeps private, its worker-thread state
(``threadlocals``) and a cancel scope's parent (``_parent_scope``). Without the first
nothing is taken over; without the second each call takes anyio's own hop. Either way
the tools behave as before, only slower, and ``tests/actors/test_tool_threads.py`` fails
and says so. Tools added to the server later (``add_tool`` at run time) keep the SDK's hop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import anyio
import anyio.lowlevel
import anyio.to_thread
from mcp.server.mcpserver import MCPServer

__all__ = ["take_over_sync_tools"]

logger = logging.getLogger(__name__)

# Threads are made as bodies need them, never more than run at once, which the loop's
# thread limiter bounds (40 by default); this only caps a limiter raised past it.
_MAX_THREADS = 256
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
_NO_PARENT = object()  # a cancel scope without anyio's private parent attribute
_executor: ThreadPoolExecutor | None = None
_loop_tokens: dict[asyncio.AbstractEventLoop, anyio.lowlevel.EventLoopToken] = {}
_lock = threading.Lock()  # the two above, should threads of several loops call at once
_warned_of_lost_internals = False


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
    """An async tool body that runs ``body`` on a worker thread as anyio's hop would."""

    # functools.wraps keeps the signature the SDK reads (inspect follows __wrapped__).
    @functools.wraps(body)
    async def on_a_worker_thread(**arguments: Any) -> Any:
        call = functools.partial(body, **arguments)
        # anyio's first checkpoint, without its yield: a cancelled call stops here.
        await anyio.lowlevel.checkpoint_if_cancelled()
        limiter = anyio.to_thread.current_default_thread_limiter()
        borrower = object()
        try:
            limiter.acquire_on_behalf_of_nowait(borrower)
        except anyio.WouldBlock:  # every token is out: anyio's own hop waits for one
            return await anyio.to_thread.run_sync(call)
        try:
            with anyio.CancelScope(shield=True) as waiting:
                caller_scope = getattr(waiting, "_parent_scope", _NO_PARENT)
                if caller_scope is not _NO_PARENT:
                    # anyio's choice: the body belongs to the caller's scope, if any.
                    scope = cast("anyio.CancelScope | None", caller_scope) or waiting
                    return await _on_a_thread(thread_state, scope, call)
        finally:
            limiter.release_on_behalf_of(borrower)
        _lost_anyio_internals()
        return await anyio.to_thread.run_sync(call)

    setattr(on_a_worker_thread, _TAKEN_OVER, True)
    return on_a_worker_thread


async def _on_a_thread(
    thread_state: threading.local, scope: anyio.CancelScope, call: Callable[[], Any]
) -> Any:
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()
    run = functools.partial(
        _run_body, thread_state, _token_of(loop), scope, context, call, loop, outcome
    )
    # Submitted from the loop's next turn, not now: a cancel already queued for this
    # call (a deadline's, a client's notifications/cancelled) runs first and the body
    # never starts, as behind anyio's first checkpoint, which yields where this waits.
    loop.call_soon(_submit_unless_cancelled, outcome, run)
    return await outcome


def _submit_unless_cancelled(outcome: asyncio.Future[Any], run: Callable[[], None]) -> None:
    if not outcome.cancelled():
        _threads().submit(run)


def _run_body(
    thread_state: threading.local,
    token: anyio.lowlevel.EventLoopToken,
    scope: anyio.CancelScope,
    context: contextvars.Context,
    body: Callable[[], Any],
    loop: asyncio.AbstractEventLoop,
    outcome: asyncio.Future[Any],
) -> None:
    result: Any = None
    error: BaseException | None = None
    if not outcome.cancelled():
        # What anyio's worker thread sets for a body: the loop ``from_thread`` calls
        # into and the scope it checks and runs coroutines in.
        thread_state.current_token = token
        thread_state.current_cancel_scope = scope
        try:
            result = context.run(body)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, as anyio does
            error = exc
        finally:
            # Nothing of this call stays on the thread (the token would keep its loop).
            del thread_state.current_cancel_scope, thread_state.current_token
    try:
        loop.call_soon_threadsafe(_report, outcome, result, error)
    except RuntimeError:
        if not loop.is_closed():
            raise


def _report(outcome: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if outcome.cancelled():
        return
    if error is None:
        outcome.set_result(result)
        return
    if isinstance(error, StopIteration):  # a future cannot hold one: anyio's conversion
        converted = RuntimeError("coroutine raised StopIteration")
        converted.__cause__ = error
        error = converted
    outcome.set_exception(error)


def _token_of(loop: asyncio.AbstractEventLoop) -> anyio.lowlevel.EventLoopToken:
    token = _loop_tokens.get(loop)
    if token is None:
        token = anyio.lowlevel.current_token()
        with _lock:
            # A process that runs loop after loop (tests) must not keep every one alive.
            for closed in [known for known in _loop_tokens if known.is_closed()]:
                del _loop_tokens[closed]
            _loop_tokens[loop] = token
    return token


def _threads() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(_MAX_THREADS, thread_name_prefix=_THREAD_PREFIX)
    return _executor


def _lost_anyio_internals() -> None:
    global _warned_of_lost_internals
    if not _warned_of_lost_internals:
        _warned_of_lost_internals = True
        logger.warning("anyio's cancel scopes changed: sync tools take anyio's own hop")
