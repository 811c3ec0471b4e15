"""The bus on a real local Ray: workers hosting real MCP servers behind the router."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cluster.bus import bus_status, launch_bus, stop_bus
from cluster.client import BusClient, CallError
from cluster.config import parse_config

pytestmark = pytest.mark.ray


def config_for(pools: list[dict[str, Any]], **extra: Any) -> Any:
    return parse_config(
        {
            "name": f"t{uuid.uuid4().hex[:8]}",
            "pools": pools,
            "discovery": {"heartbeat_interval_s": 0.2, "ttl_s": 1.0},
            **extra,
        }
    )


@pytest.fixture
async def testkit_bus(ray_session: None) -> AsyncIterator[BusClient]:
    config = config_for(
        [
            {"name": "kit", "server": "cluster.examples.testkit:server", "min_workers": 2},
            {
                "name": "calc",
                "command": [sys.executable, "-m", "cluster.examples.calculator"],
                "min_workers": 1,
            },
        ]
    )
    await launch_bus(config)
    client = await BusClient.connect(config.name)
    try:
        yield client
    finally:
        await client.close()
        await stop_bus(config.name)


async def test_sdk_and_stdio_servers_answer_tools_resources_and_prompts(
    testkit_bus: BusClient,
) -> None:
    client = testkit_bus
    echoed = await client.call_tool("echo", {"text": "hi"})
    assert echoed.structured_content == {"result": "hi"}
    added = await client.call_tool("add", {"a": 2, "b": 3})
    assert added.structured_content == {"result": 5.0}
    greeting = await client.read_resource("testkit://greeting")
    assert greeting.contents[0].text == "hello from testkit"  # type: ignore[union-attr]
    pi = await client.read_resource("calc://constants/pi")
    assert pi.contents[0].text.startswith("3.14159")  # type: ignore[union-attr]
    prompt = await client.get_prompt("summarize", {"topic": "Ray"})
    assert "Ray" in prompt.messages[0].content.text  # type: ignore[union-attr]
    explained = await client.get_prompt("explain", {"expression": "1+1"})
    assert "1+1" in explained.messages[0].content.text  # type: ignore[union-attr]
    names = {tool.name for tool in await client.list_tools()}
    assert {"echo", "nap", "add", "multiply"} <= names


async def test_an_unknown_tool_is_a_clear_error(testkit_bus: BusClient) -> None:
    with pytest.raises(CallError) as caught:
        await testkit_bus.call_tool("no_such_tool", {})
    assert caught.value.code == -32602
    assert "no_such_tool" in caught.value.message


async def test_load_spreads_over_the_pools_workers(testkit_bus: BusClient) -> None:
    results = await testkit_bus.map_tool_calls([("whoami", {}) for _ in range(200)], concurrency=64)
    pids = {
        r.structured_content["pid"]
        for r in results
        if not isinstance(r, Exception) and r.structured_content
    }
    assert len(pids) == 2


async def test_progress_reaches_the_caller(testkit_bus: BusClient) -> None:
    seen: list[float] = []

    def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    result = await testkit_bus.call_tool("count_with_progress", {"steps": 4}, progress=on_progress)
    assert result.structured_content == {"result": 4}
    assert seen == [1, 2, 3, 4]


async def test_status_shows_pools_and_workers(testkit_bus: BusClient) -> None:
    status = await bus_status(testkit_bus.bus)
    assert status["pools"]["kit"]["workers"] == 2
    assert {w["pool"] for w in status["workers"]} == {"kit", "calc"}
    assert asyncio.get_running_loop()
