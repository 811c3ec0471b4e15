"""Tool namespaces, filters and name clashes on a real local Ray bus.

One bus serves the module: the same module of functions in two pools under two
namespaces (one of them hiding a tool) and the testkit's SDK server under a third,
showing only the tools it includes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from cluster.bus import NameCollision, bus_status, launch_bus, running_buses
from cluster.client import BusClient, CallError
from tests.cluster.bus_helpers import bus_config, running_bus

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module")]

FUNCTIONS = "cluster.examples.functions"  # hypotenuse, word_count
# Imported by a worker only (the repository root is on the workers' path).
GROWING = "tests.cluster.growing_server:server"
ONE_WORKER = {"min_workers": 1, "max_workers": 1, "warm_spares": 0}


def pool(name: str, **settings: Any) -> dict[str, Any]:
    return {"name": name, **ONE_WORKER, **settings}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bus(ray_session: None) -> AsyncIterator[BusClient]:
    config = bus_config(
        [
            pool("geo", tools=FUNCTIONS, namespace="geo"),
            pool("maps", tools=FUNCTIONS, namespace="maps", exclude=["word_*"]),
            pool(
                "kit",
                server="cluster.examples.testkit:server",
                namespace="kit",
                include=["echo", "who*"],
            ),
        ]
    )
    async with running_bus(config) as client:
        yield client


async def test_the_same_tool_in_two_pools_is_callable_under_each_namespace(
    bus: BusClient,
) -> None:
    geo, maps = await asyncio.gather(
        bus.call_tool("geo_hypotenuse", {"a": 3, "b": 4}),
        bus.call_tool("maps_hypotenuse", {"a": 5, "b": 12}),
    )
    assert geo.structured_content == {"result": 5.0}
    assert maps.structured_content == {"result": 13.0}
    counted = await bus.call_tool("geo_word_count", {"text": "one two three"})
    assert counted.structured_content == {"result": 3}


async def test_the_tool_list_shows_namespaced_names_of_shown_tools_only(bus: BusClient) -> None:
    names = {tool.name for tool in await bus.list_tools()}
    assert names == {
        "geo_hypotenuse",
        "geo_word_count",
        "maps_hypotenuse",
        "kit_echo",
        "kit_whoami",
    }


@pytest.mark.parametrize(
    "name",
    [
        "maps_word_count",  # excluded
        "kit_nap",  # not included
        "hypotenuse",  # the server's own name, hidden behind its namespace
    ],
)
async def test_a_hidden_or_unprefixed_tool_is_refused_as_unknown(bus: BusClient, name: str) -> None:
    with pytest.raises(CallError) as caught:
        await bus.call_tool(name, {"text": "x", "seconds": 0, "a": 1, "b": 1})
    assert (caught.value.code, caught.value.message) == (-32602, f"Unknown tool: {name}")


async def test_prompts_are_namespaced_and_resource_uris_are_kept(bus: BusClient) -> None:
    prompt = await bus.get_prompt("kit_summarize", {"topic": "Ray"})
    assert "Ray" in prompt.messages[0].content.text  # type: ignore[union-attr]
    greeting = await bus.read_resource("testkit://greeting")
    assert greeting.contents[0].text == "hello from testkit"  # type: ignore[union-attr]
    with pytest.raises(CallError) as caught:
        await bus.get_prompt("summarize", {"topic": "Ray"})
    assert caught.value.code == -32602


async def test_namespaced_pools_are_no_collision_in_status(bus: BusClient) -> None:
    status = await bus_status(bus.bus)
    assert status["collisions"] == []
    assert {"geo", "maps", "kit"} <= set(status["pools"])


async def test_two_pools_offering_one_tool_without_namespaces_fail_start_in_one_line(
    ray_session: None,
) -> None:
    config = bus_config([pool("first", tools=FUNCTIONS), pool("second", tools=FUNCTIONS)])
    with pytest.raises(NameCollision) as caught:
        await launch_bus(config)
    assert str(caught.value) == (
        "tool 'hypotenuse' is offered by pools 'first' and 'second': "
        "give one of them a namespace, or exclude the tool from one"
    )
    assert config.name not in await running_buses()  # nothing of it is left running


async def test_a_clash_that_appears_at_run_time_keeps_the_first_owner_and_shows_in_status(
    ray_session: None,
) -> None:
    config = bus_config([pool("geometry", tools=FUNCTIONS), pool("growing", server=GROWING)])
    async with running_bus(config) as client:
        await client.call_tool("grow", {"name": "hypotenuse"})
        clash = {"kind": "tool", "name": "hypotenuse", "owner": "geometry", "other": "growing"}
        async with asyncio.timeout(60):
            # Polling discovery (through status, as a user sees it) for the new list.
            while (await bus_status(config.name))["collisions"] != [clash]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        still_first = await client.call_tool("hypotenuse", {"a": 3, "b": 4})
        assert still_first.structured_content == {"result": 5.0}
        listed = [t for t in await client.list_tools() if t.name == "hypotenuse"]
        assert len(listed) == 1  # the owner's, whose arguments the call above used
        assert set(listed[0].input_schema["properties"]) == {"a", "b"}
