"""The bus on a real local Ray: workers hosting real MCP servers behind the router.

One bus serves the whole module (a bus takes seconds to start on two cores).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from actors.worker.request_params import PROTOCOL_VERSION_META_KEY
from cluster.bus import bus_status
from cluster.client import BusClient, CallError
from tests.cluster.bus_helpers import bus_config, running_bus
from tests.waiting import wait_until
from transports.message import Request

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bus(ray_session: None) -> AsyncIterator[BusClient]:
    config = bus_config(
        [
            {"name": "kit", "server": "cluster.examples.testkit:server", "min_workers": 2},
            {"name": "calc", "command": [sys.executable, "-m", "cluster.examples.calculator"]},
            {"name": "fns", "tools": "cluster.examples.functions"},
        ]
    )
    async with running_bus(config) as client:
        yield client


async def test_sdk_and_stdio_servers_answer_tools_resources_and_prompts(bus: BusClient) -> None:
    echoed = await bus.call_tool("echo", {"text": "hi"})
    assert echoed.structured_content == {"result": "hi"}
    added = await bus.call_tool("add", {"a": 2, "b": 3})
    assert added.structured_content == {"result": 5.0}
    greeting = await bus.read_resource("testkit://greeting")
    assert greeting.contents[0].text == "hello from testkit"  # type: ignore[union-attr]
    pi = await bus.read_resource("calc://constants/pi")
    assert pi.contents[0].text.startswith("3.14159")  # type: ignore[union-attr]
    prompt = await bus.get_prompt("summarize", {"topic": "Ray"})
    assert "Ray" in prompt.messages[0].content.text  # type: ignore[union-attr]
    explained = await bus.get_prompt("explain", {"expression": "1+1"})
    assert "1+1" in explained.messages[0].content.text  # type: ignore[union-attr]


async def test_plain_functions_are_served_as_tools(bus: BusClient) -> None:
    result = await bus.call_tool("hypotenuse", {"a": 3, "b": 4})
    assert result.structured_content == {"result": 5.0}


async def test_a_hosted_servers_sync_tools_run_on_the_workers_own_threads(bus: BusClient) -> None:
    # The worker takes its server's sync tools over (actors.worker.tool_threads).
    who = (await bus.call_tool("whoami")).structured_content
    assert who is not None
    assert str(who["thread"]).startswith("raybus-tool")


async def test_list_tools_aggregates_every_pool(bus: BusClient) -> None:
    names = {tool.name for tool in await bus.list_tools()}
    assert {"echo", "nap", "add", "multiply", "hypotenuse", "word_count"} <= names


async def test_an_unknown_tool_is_a_clear_error(bus: BusClient) -> None:
    with pytest.raises(CallError) as caught:
        await bus.call_tool("no_such_tool", {})
    assert caught.value.code == -32602
    assert "no_such_tool" in caught.value.message


async def test_fifty_clients_with_colliding_ids_get_only_their_own_answers(bus: BusClient) -> None:
    sessions = [bus.new_session() for _ in range(50)]
    per_session = 200  # 10,000 calls; every session numbers its calls 1, 2, 3, ...

    async def run(index: int, session: BusClient) -> list[tuple[str, str]]:
        calls = [("echo", {"text": f"{index}:{n}"}) for n in range(per_session)]
        results = await session.map_tool_calls(calls, concurrency=8)
        return [
            (
                f"{index}:{n}",
                r.structured_content["result"]
                if not isinstance(r, Exception) and r.structured_content
                else repr(r),
            )
            for n, r in enumerate(results)
        ]

    outcomes = await asyncio.gather(*(run(i, s) for i, s in enumerate(sessions)))
    mismatched = [(sent, got) for pairs in outcomes for sent, got in pairs if sent != got]
    assert sum(len(p) for p in outcomes) == 10_000
    assert mismatched == []


async def test_load_spreads_over_the_pools_workers(bus: BusClient) -> None:
    results = await bus.map_tool_calls([("whoami", {}) for _ in range(200)], concurrency=64)
    pids = {
        r.structured_content["pid"]
        for r in results
        if not isinstance(r, Exception) and r.structured_content
    }
    assert len(pids) == 2


async def test_progress_reaches_the_caller(bus: BusClient) -> None:
    seen: list[float] = []

    def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    result = await bus.call_tool("count_with_progress", {"steps": 4}, progress=on_progress)
    assert result.structured_content == {"result": 4}
    assert seen == [1, 2, 3, 4]


async def test_logs_reach_only_the_calling_session(bus: BusClient) -> None:
    caller, bystander = bus.new_session(), bus.new_session()
    await caller.call_tool("shout", {"message": "for the caller"})
    await wait_until(lambda: len(caller.notifications) == 1)
    assert caller.notifications[0].method == "notifications/message"
    assert not bystander.notifications


async def test_sampling_requests_reach_the_caller_and_its_answer_returns(bus: BusClient) -> None:
    session = bus.new_session()
    asked: list[Request] = []

    async def answer(request: Request) -> dict[str, Any]:
        asked.append(request)
        return {"role": "assistant", "content": {"type": "text", "text": "four"}, "model": "test"}

    session.server_request_handler = answer
    result = await session.call_tool("ask", {"question": "2+2?"})
    assert result.structured_content == {"result": "four"}
    assert [r.method for r in asked] == ["sampling/createMessage"]


async def test_a_client_without_a_sampling_handler_fails_the_call_naming_the_request(
    bus: BusClient,
) -> None:
    # Without a handler the call goes out stateless (2026-07-28): the server learns up
    # front that nobody would answer it, and the call fails naming what it asked for.
    with pytest.raises(CallError) as caught:
        await bus.new_session().call_tool("ask", {"question": "?"})
    assert "sampling/createMessage" in caught.value.message


def seen_protocol_version(result: Any) -> object:
    params = json.loads(result.content[0].text)["params"]
    return params.get("_meta", {}).get(PROTOCOL_VERSION_META_KEY)


async def test_a_call_goes_stateless_unless_its_session_answers_server_requests(
    bus: BusClient,
) -> None:
    plain = await bus.new_session().call_tool("dump_request")
    assert seen_protocol_version(plain) == "2026-07-28"  # served by one serve_one
    answering = bus.new_session()

    async def answer(request: Request) -> dict[str, Any]:
        return {}

    answering.server_request_handler = answer
    # Over the worker's handshake session, where the server's requests reach this client.
    assert seen_protocol_version(await answering.call_tool("dump_request")) is None


async def test_a_cancelled_call_stops_on_the_worker(bus: BusClient, tmp_path: Path) -> None:
    marker = tmp_path / "cancelled"
    call = asyncio.create_task(bus.call_tool("nap", {"seconds": 60, "marker": str(marker)}))
    status = await _wait_in_flight(bus, "kit", 1)
    assert status["pools"]["kit"]["in_flight"] == 1
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await wait_until(marker.exists, timeout_s=60)
    await _wait_in_flight(bus, "kit", 0)


async def test_status_shows_pools_and_workers(bus: BusClient) -> None:
    status = await bus_status(bus.bus)
    assert status["pools"]["kit"]["workers"] == 2
    assert {w["pool"] for w in status["workers"]} == {"kit", "calc", "fns"}


async def _wait_in_flight(bus: BusClient, pool: str, count: int) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            status = await bus_status(bus.bus)
            if status["pools"][pool]["in_flight"] == count:
                return status
            await asyncio.sleep(0.05)  # polling router state from outside
