"""A hosted server's sync tools on raybus's threads: what the SDK's own hop gave them, kept.

Each server here is a real ``MCPServer`` called by the SDK's own client (both protocol
eras), or its taken-over tool body awaited directly where a test needs the caller's
context. Waits are bounded; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import anyio.from_thread
import mcp
import pytest
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from actors.worker.tool_threads import MAX_THREADS, take_over_sync_tools

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


async def test_sync_tools_are_taken_over_once_and_async_ones_left_alone() -> None:
    server = _server()
    before = {tool.name: tool.input_schema for tool in await server.list_tools()}
    assert take_over_sync_tools(server) == 3
    assert take_over_sync_tools(server) == 0  # done before: never wrapped twice
    tools = {tool.name: tool for tool in server._tool_manager.list_tools()}
    assert all(tool.is_async for tool in tools.values())
    assert tools["already_async"].fn.__name__ == "already_async"
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
async def test_a_failing_body_is_the_same_tool_error_as_on_the_sdks_hop(mode: str) -> None:
    plain, taken_over = _server(), _server()
    take_over_sync_tools(taken_over)
    answers = []
    for server in (plain, taken_over):
        async with asyncio.timeout(_WAIT_S), mcp.Client(server, mode=mode) as client:
            answers.append(await client.call_tool("fails", {"text": "x"}))
    assert answers[0].is_error
    assert answers[1].is_error
    assert answers[0].content == answers[1].content
    assert "cannot take 'x'" in str(answers[1].content)


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
    server = MCPServer("context")

    @server.tool()
    def whose() -> str:
        """The caller this body was called for."""
        return _caller.get()

    take_over_sync_tools(server)
    body = _body(server, "whose")

    async def call_as(name: str) -> str:
        _caller.set(name)
        result: str = await body()
        return result

    async with asyncio.timeout(_WAIT_S):
        assert list(await asyncio.gather(call_as("a"), call_as("b"))) == ["a", "b"]


async def test_bodies_run_side_by_side_up_to_the_thread_limit() -> None:
    # Each body waits until all have started: run one after another they never would.
    together = min(MAX_THREADS, 8)
    all_started = threading.Barrier(together, timeout=_WAIT_S)
    server = MCPServer("side by side")

    @server.tool()
    def meet() -> int:
        """Wait for the others."""
        return all_started.wait()

    take_over_sync_tools(server)
    body = _body(server, "meet")
    async with asyncio.timeout(_WAIT_S):
        arrivals = await asyncio.gather(*(body() for _ in range(together)))
    assert sorted(arrivals) == list(range(together))


async def test_a_cancelled_call_returns_while_its_body_runs_on() -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    server = MCPServer("cancel")

    @server.tool()
    def hold() -> str:
        """Wait to be released."""
        started.set()
        release.wait(_WAIT_S)
        finished.set()
        return "released"

    take_over_sync_tools(server)
    call = asyncio.create_task(_body(server, "hold")())
    async with asyncio.timeout(_WAIT_S):
        await asyncio.to_thread(started.wait, _WAIT_S)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    assert not finished.is_set()  # the call returned; its body still runs
    release.set()
    assert await asyncio.to_thread(finished.wait, _WAIT_S)


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
    all_busy = threading.Barrier(MAX_THREADS + 1, timeout=_WAIT_S)
    server = MCPServer("queued")

    @server.tool()
    def occupy(name: str) -> str:
        """Hold a thread until released."""
        ran.append(name)
        if name.startswith("busy"):
            all_busy.wait()
            release.wait(_WAIT_S)
        return name

    take_over_sync_tools(server)
    body = _body(server, "occupy")
    busy = [asyncio.create_task(body(name=f"busy {n}")) for n in range(MAX_THREADS)]
    async with asyncio.timeout(_WAIT_S):
        await asyncio.to_thread(all_busy.wait)  # every thread holds a body
        queued = asyncio.create_task(body(name="queued"))
        await asyncio.sleep(0)  # one turn: its task submits the body, then waits
        queued.cancel()
        release.set()
        await asyncio.gather(*busy)
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert "queued" not in ran
