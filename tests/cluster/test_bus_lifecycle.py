"""Failure and resize on a real local Ray: breaker, drain on scale-down, lost workers."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
import ray

from cluster.bus import bus_status
from cluster.client import BusClient, CallError
from cluster.naming import actor_names, get_actor
from tests.cluster.bus_helpers import bus_config, running_bus, slow_call_breaker
from tests.waiting import wait_until
from transports.envelope import Envelope
from transports.errors import BusErrorCode
from transports.frame import Frame
from transports.message import Request

pytestmark = pytest.mark.ray

KIT = {"name": "kit", "server": "cluster.examples.testkit:server"}


async def pool_status(client: BusClient, pool: str = "kit") -> dict[str, Any]:
    status = await bus_status(client.bus)
    pool_status: dict[str, Any] = status["pools"][pool]
    return pool_status


async def wait_for_pool(client: BusClient, key: str, value: Any, timeout_s: float = 120) -> None:
    async with asyncio.timeout(timeout_s):
        while (await pool_status(client))[key] != value:  # noqa: ASYNC110 - remote state
            await asyncio.sleep(0.05)


async def test_the_breaker_opens_on_the_pools_own_verdicts_fails_fast_and_closes_after_a_probe(
    ray_session: None,
) -> None:
    # The cooldown is long enough that the checks of the open state (a status read, five
    # rejected calls) all land inside it even on a loaded machine; 1 s raced them.
    breaker = slow_call_breaker(open_cooldown_s=10.0, window_s=30)
    config = bus_config([{**KIT, "min_workers": 1}], router={"breaker": breaker})
    async with running_bus(config) as client:
        before = (await client.call_tool("whoami")).structured_content
        assert before is not None
        # Calls their callers gave up on are no verdict on the pool (issue 13, item 8).
        for _ in range(3):
            with pytest.raises(CallError) as timed_out:
                await client.call_tool("nap", {"seconds": 10}, timeout_s=0.3)
            assert timed_out.value.code == BusErrorCode.DEADLINE_EXCEEDED
        assert (await pool_status(client))["breaker"] == "closed"
        # Calls the pool answered, too slowly, are. A worker reports a call's end once its
        # answer has left, so the router may hear of the last one just after the caller.
        for _ in range(3):
            await client.call_tool("nap", {"seconds": 0.3})
        await wait_for_pool(client, "breaker", "open")
        for _ in range(5):
            with pytest.raises(CallError) as rejected:
                await client.call_tool("echo", {"text": "x"})
            assert rejected.value.code == BusErrorCode.CIRCUIT_OPEN
        await wait_for_pool(client, "breaker", "half_open")
        assert (await client.call_tool("echo", {"text": "probe"})).structured_content == {
            "result": "probe"
        }
        await wait_for_pool(client, "breaker", "closed")  # the probe's verdict closes it
        after = (await client.call_tool("whoami")).structured_content
        assert after is not None
        assert after["echo_calls"] == before["echo_calls"] + 1  # the rejected calls never ran


def _direct_call(n: int, tool: str, arguments: dict[str, Any]) -> Frame:
    """A call as a client sends it directly to a worker (answered on the return)."""
    envelope = Envelope(
        client_id="breaker-test",
        request_id=str(n),
        reply_to="raybus/nobody/client/breaker-test",
        method="tools/call",
        name=tool,
    )
    params = {"name": tool, "arguments": arguments}
    return Frame.of(envelope, Request(id=n, method="tools/call", params=params))


async def _until_closed_to_direct_calls(worker: Any) -> None:
    """Until ``worker`` says it takes no direct calls (asked with none: nothing runs)."""
    async with asyncio.timeout(30):
        while not (await worker.call.remote([])).closed:  # noqa: ASYNC110 - remote state
            await asyncio.sleep(0.05)


async def test_every_worker_hears_its_pools_breaker_opened_and_takes_no_direct_call_past_it(
    ray_session: None,
) -> None:
    breaker = slow_call_breaker(open_cooldown_s=60.0, window_s=60)  # open for every check
    pool = {**KIT, "min_workers": 2, "max_workers": 3}
    config = bus_config([pool], router={"breaker": breaker})
    async with running_bus(config) as client:
        await wait_for_pool(client, "workers", 2)
        supervisor = get_actor(actor_names.supervisor(config.name))
        started = (await supervisor.workers.remote())["kit"]
        first, other = [get_actor(name) for name in started]
        slow_calls = 0  # all on the first worker: its verdicts
        async with asyncio.timeout(60):
            for n in itertools.count():
                if slow_calls == 3:
                    break
                frame = _direct_call(n, "nap", {"seconds": 0.3})
                if (await first.call.remote([frame])).answers:
                    slow_calls += 1
                else:  # bounced while the router hears of the last verdict: again
                    await asyncio.sleep(0.05)
        await wait_for_pool(client, "breaker", "open")
        # The other worker ran none of them, so no answer to a report of its own says
        # so: the router tells it, and it stops taking direct calls.
        await _until_closed_to_direct_calls(other)
        # A worker that joins while the breaker is open is told as it joins.
        assert await supervisor.scale.remote("kit", 3) == 3
        await wait_for_pool(client, "workers", 3)
        joined = [n for n in (await supervisor.workers.remote())["kit"] if n not in started]
        assert len(joined) == 1
        await _until_closed_to_direct_calls(get_actor(joined[0]))
        calls = [client.call_tool("echo", {"text": "x"}) for _ in range(6)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert [getattr(o, "code", o) for o in outcomes] == [BusErrorCode.CIRCUIT_OPEN] * 6


async def test_scaling_down_drains_a_worker_and_every_call_it_held_finishes(
    ray_session: None,
) -> None:
    config = bus_config([{**KIT, "min_workers": 1, "max_workers": 2, "max_concurrency": 8}])
    async with running_bus(config) as client:
        supervisor = get_actor(actor_names.supervisor(config.name))
        assert await supervisor.scale.remote("kit", 2) == 2
        await wait_for_pool(client, "workers", 2)
        calls = [asyncio.create_task(client.call_tool("nap", {"seconds": 1.0})) for _ in range(12)]
        await wait_for_pool(client, "in_flight", 12)
        assert await supervisor.scale.remote("kit", 1) == 1
        results = await asyncio.gather(*calls)
        assert [r.structured_content for r in results] == [{"result": "slept 1.0"}] * 12
        workers = await supervisor.workers.remote()
        assert len(workers["kit"]) == 1
        assert (await pool_status(client))["workers"] == 1


async def test_a_killed_worker_is_forgotten_by_discovery_and_replaced(ray_session: None) -> None:
    config = bus_config([{**KIT, "min_workers": 2, "max_workers": 2}])
    async with running_bus(config) as client:
        supervisor = get_actor(actor_names.supervisor(config.name))
        discovery = get_actor(actor_names.discovery(config.name))
        victim = (await supervisor.workers.remote())["kit"][0]
        ray.kill(get_actor(victim), no_restart=True)
        async with asyncio.timeout(120):  # a replacement worker starts: slow when loaded
            while True:
                names = {w.actor_name for w in await discovery.workers.remote()}
                if victim not in names and len(names) == 2:
                    break
                await asyncio.sleep(0.1)  # polling discovery from outside
        results = await client.map_tool_calls([("echo", {"text": str(i)}) for i in range(50)])
        assert [r.structured_content for r in results] == [{"result": str(i)} for i in range(50)]  # type: ignore[union-attr]


async def test_a_pools_default_deadline_ends_a_never_ending_call_and_cancels_the_tool(
    ray_session: None, tmp_path: Path
) -> None:
    config = bus_config([{**KIT, "timeout_s": 1.0}])
    marker = tmp_path / "cancelled"
    async with running_bus(config) as client:
        with pytest.raises(CallError) as caught:
            # The caller allows far longer than the pool does: the pool's deadline wins.
            await client.call_tool("nap", {"seconds": 1e9, "marker": str(marker)}, timeout_s=120)
        assert caught.value.code == BusErrorCode.DEADLINE_EXCEEDED
        await wait_until(marker.exists, timeout_s=30)
        await wait_for_pool(client, "in_flight", 0)
        assert (await pool_status(client))["breaker"] == "closed"
        echoed = await client.call_tool("echo", {"text": "still fine"})
        assert echoed.structured_content == {"result": "still fine"}
