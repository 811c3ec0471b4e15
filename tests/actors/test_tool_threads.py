"""A hosted server's sync tools on raybus's threads: what the SDK's own hop gave them, kept.

Each server here is a real ``MCPServer`` called by the SDK's own client (both protocol
eras), or its taken-over tool body awaited directly where a test needs the caller's
context. Waits are bounded; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import mcp
import pytest
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from actors.worker.tool_threads import take_over_sync_tools
from tests.waiting import wait_until

_WAIT_S = 30.0  # a cold, loaded 2-core machine still meets every bound below
_ERAS = ("legacy", "auto")  # auto: the 2026-07-28 era, as this SDK's client speaks it
_caller = contextvars.ContextVar[str]("caller", default="unset")


def _server() -> MCPServer:
    server = MCPServer("threads")

    @server.tool()
    def where(text: str) -> dict[str, Any]:
        """Name the thread the body runs on."""
        return {"text": text, "thread": threading.current_thread().name}

    @server.tool()
    async def already_async(text: str) -> str:
        """An async tool: left as it is."""
        return text

    @server.tool()
    def fails(text: str) -> str:
        """Refuse, as a tool does with a message for its caller."""
        raise ToolError(f"cannot take {text!r}")

    @server.tool()
    def first_of(items: list[str]) -> str:
        """The first item; a body that lets StopIteration escape when there is none."""
        return next(iter(items))

    @server.tool()
    def gives_up() -> str:
        """Wait on a future that was cancelled: concurrent.futures.CancelledError."""
        cancelled: concurrent.futures.Future[str] = concurrent.futures.Future()
        cancelled.cancel()
        return cancelled.result()

    @server.tool()
    def reports(ctx: Context) -> str:
        """Report progress through the Context from the thread, as a sync tool has to."""
        anyio.from_thread.run(ctx.report_progress, 1, 2, "from the tool's thread")
        anyio.from_thread.check_cancelled()
        return "reported"

    return server


def _body(server: MCPServer, name: str) -> Any:
    tool = server._tool_manager.get_tool(name)
    assert tool is not None
    return tool.fn


def _taken_over(tool: Callable[..., Any]) -> Any:
    """``tool`` served alone by a server whose sync tools were taken over: its new body."""
    server = MCPServer(tool.__name__)
    server.add_tool(tool)
    take_over_sync_tools(server)
    return _body(server, tool.__name__)


async def test_sync_tools_are_taken_over_once_and_async_ones_left_alone() -> None:
    server = _server()
    before = {tool.name: tool.input_schema for tool in await server.list_tools()}
    assert take_over_sync_tools(server) == 5
    assert take_over_sync_tools(server) == 0  # done before: never wrapped twice
    tools = {tool.name: tool for tool in server._tool_manager.list_tools()}
    assert all(tool.is_async for tool in tools.values())
    assert not hasattr(tools["already_async"].fn, "__wrapped__")  # its own body, untouched
    # What clients see of the tools does not change.
    assert {tool.name: tool.input_schema for tool in await server.list_tools()} == before


def test_a_low_level_server_has_nothing_to_take_over() -> None:
    assert take_over_sync_tools(Server("low level")) == 0


@pytest.mark.parametrize("mode", _ERAS)
async def test_a_taken_over_tool_runs_on_a_raybus_thread_and_answers_as_before(
    mode: str,
) -> None:
    server = _server()
    take_over_sync_tools(server)
    loop_thread = threading.current_thread().name
    async with asyncio.timeout(_WAIT_S), mcp.Client(server, mode=mode) as client:
        result = await client.call_tool("where", {"text": "hi"})
    assert not result.is_error
    assert result.structured_content is not None
    assert result.structured_content["text"] == "hi"
    thread = result.structured_content["thread"]
    assert thread.startswith("raybus-tool")
    assert thread != loop_thread


@pytest.mark.parametrize("mode", _ERAS)
@pytest.mark.parametrize(
    ("tool", "arguments"),
    [("fails", {"text": "x"}), ("first_of", {"items": []}), ("gives_up", {})],
)
async def test_a_failing_body_is_the_same_answer_as_on_the_sdks_hop(
    mode: str, tool: str, arguments: dict[str, Any]
) -> None:
    # StopIteration cannot be held by a future and a concurrent CancelledError reads as
    # a cancellation on the loop: both must still be tool errors, and the session lives.
    plain, taken_over = _server(), _server()
    take_over_sync_tools(taken_over)
    answers = []
    for server in (plain, taken_over):
        async with asyncio.timeout(_WAIT_S), mcp.Client(server, mode=mode) as client:
            answers.append(await client.call_tool(tool, arguments))
            after = await client.call_tool("where", {"text": "still here"})
            assert not after.is_error
    assert answers[0].is_error
    assert answers[1].is_error
    assert answers[0].content == answers[1].content


async def test_a_failing_body_raises_its_own_exception_with_its_traceback() -> None:
    def deep_inside() -> str:
        raise TimeoutError("the body's own")

    def slow() -> str:
        """Fail from a nested call."""
        return deep_inside()

    async with asyncio.timeout(_WAIT_S):
        with pytest.raises(TimeoutError, match="the body's own") as caught:
            await _taken_over(slow)()
    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert "deep_inside" in frames


@pytest.mark.parametrize("mode", _ERAS)
async def test_a_body_calls_back_into_the_loop_with_anyio_from_thread(mode: str) -> None:
    server = _server()
    take_over_sync_tools(server)
    reports: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reports.append((progress, total, message))

    async with asyncio.timeout(_WAIT_S), mcp.Client(server, mode=mode) as client:
        result = await client.call_tool("reports", {}, progress_callback=on_progress)
    assert not result.is_error, result.content
    assert reports == [(1, 2, "from the tool's thread")]


async def test_a_body_sees_the_callers_context_variables() -> None:
    def whose() -> str:
        """The caller this body was called for."""
        return _caller.get()

    body = _taken_over(whose)

    async def call_as(name: str) -> str:
        _caller.set(name)
        result: str = await body()
        return result

    async with asyncio.timeout(_WAIT_S):
        assert list(await asyncio.gather(call_as("a"), call_as("b"))) == ["a", "b"]


async def test_bodies_run_side_by_side_up_to_the_thread_limit() -> None:
    # Each body waits until all have started: run one after another they never would.
    together = 8
    all_started = threading.Barrier(together, timeout=_WAIT_S)

    def meet() -> int:
        """Wait for the others."""
        return all_started.wait()

    body = _taken_over(meet)
    async with asyncio.timeout(_WAIT_S):
        arrivals = await asyncio.gather(*(body() for _ in range(together)))
    assert sorted(arrivals) == list(range(together))


async def test_a_cancelled_call_is_held_until_its_body_ends_and_the_body_sees_it() -> None:
    # As anyio's hop: the SDK cancels a call's scope; the body is in that scope.
    started, finished = threading.Event(), threading.Event()
    seen: list[str] = []
    server = MCPServer("cancel")

    @contextlib.contextmanager
    def watched() -> Iterator[None]:
        """Mark the body started, note how it ended, mark it finished."""
        started.set()
        try:
            yield
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise
        finally:
            finished.set()

    @server.tool()
    def poll() -> str:
        """Work until cancelled, checking between steps."""
        with watched():
            for _ in range(int(_WAIT_S / 0.005)):
                anyio.from_thread.check_cancelled()
                finished.wait(0.005)  # one step of work
        return "never cancelled"

    @server.tool()
    def awaits() -> str:
        """Run a coroutine on the loop that only a cancellation ends."""
        with watched():
            anyio.from_thread.run(asyncio.Event().wait)
        return "never cancelled"

    take_over_sync_tools(server)

    async def call(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            await _body(server, name)()

    for tool in ("poll", "awaits"):
        started.clear()
        finished.clear()
        seen.clear()
        scope = anyio.CancelScope()
        async with asyncio.timeout(_WAIT_S):
            running = asyncio.create_task(call(tool, scope))
            await asyncio.to_thread(started.wait, _WAIT_S)
            scope.cancel()
            await running  # the scope ends the call once the body has ended
        assert finished.is_set()
        assert seen == ["CancelledError"], tool


async def test_the_loops_thread_limit_is_honoured() -> None:
    running, most = 0, 0
    counting = threading.Lock()

    def count() -> int:
        """Count the bodies running at once."""
        nonlocal running, most
        with counting:
            running += 1
            most = max(most, running)
        try:
            threading.Event().wait(0.01)  # long enough for others to overlap if allowed
            return most
        finally:
            with counting:
                running -= 1

    body = _taken_over(count)
    limiter = anyio.to_thread.current_default_thread_limiter()
    limiter.total_tokens = 1  # a server that must not run two bodies at once says so
    async with asyncio.timeout(_WAIT_S):
        await asyncio.gather(*(body() for _ in range(6)))
    assert most == 1
    assert limiter.borrowed_tokens == 0  # every token came back


async def test_tools_added_after_the_take_over_keep_the_sdks_hop() -> None:
    server = _server()
    take_over_sync_tools(server)

    @server.tool()
    def later(text: str) -> str:
        """Added once the server runs."""
        return text

    tool = server._tool_manager.get_tool("later")
    assert tool is not None
    assert not tool.is_async
    async with asyncio.timeout(_WAIT_S), mcp.Client(server) as client:
        assert not (await client.call_tool("later", {"text": "x"})).is_error


async def test_a_call_cancelled_before_its_body_started_never_runs_it() -> None:
    release = threading.Event()
    ran: list[str] = []
    tokens = int(anyio.to_thread.current_default_thread_limiter().total_tokens)
    all_busy = threading.Barrier(tokens + 1, timeout=_WAIT_S)

    def occupy(name: str) -> str:
        """Hold a thread until released."""
        ran.append(name)
        if name.startswith("busy"):
            all_busy.wait()
            release.wait(_WAIT_S)
        return name

    body = _taken_over(occupy)
    limiter = anyio.to_thread.current_default_thread_limiter()
    busy = [asyncio.create_task(body(name=f"busy {n}")) for n in range(tokens)]
    async with asyncio.timeout(_WAIT_S):
        await asyncio.to_thread(all_busy.wait)  # every thread token holds a body
        queued = asyncio.create_task(body(name="queued"))
        await wait_until(lambda: limiter.statistics().tasks_waiting == 1, _WAIT_S)
        queued.cancel()
        release.set()
        await asyncio.gather(*busy)
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert "queued" not in ran
    assert limiter.borrowed_tokens == 0


async def test_a_call_whose_scope_is_already_cancelled_never_runs_its_body() -> None:
    ran: list[str] = []

    def note() -> str:
        """Record that the body ran."""
        ran.append("ran")
        return "ran"

    body = _taken_over(note)
    async with asyncio.timeout(_WAIT_S):
        with anyio.CancelScope() as scope:
            scope.cancel()
            await body()
        # A cancel queued for the call before it reached the hop stops it there too.
        call = asyncio.create_task(body())
        asyncio.get_running_loop().call_soon(call.cancel)
        with pytest.raises(asyncio.CancelledError):
            await call
    assert ran == []
    assert anyio.to_thread.current_default_thread_limiter().borrowed_tokens == 0


async def test_nothing_of_a_call_stays_on_its_thread() -> None:
    from actors.worker import tool_threads

    server = _server()
    take_over_sync_tools(server)
    async with asyncio.timeout(_WAIT_S):
        await _body(server, "where")(text="x")
        state = tool_threads._ANYIO_THREAD_STATE
        leftovers = await asyncio.wrap_future(
            tool_threads._threads().submit(
                lambda: [n for n in ("current_token", "current_cancel_scope") if hasattr(state, n)]
            )
        )
    assert leftovers == []
