"""Warm spares and the resource ceiling on real Ray.

A pool of workers reserving 0.5 CPU on the session's 2-CPU Ray keeps one warm spare. The
spare is started but not routed (no call reaches it, it is not counted); a burst makes
the autoscaler scale up, activating the spare first, which then serves calls; the pool
never grows past what the free CPUs can run, no spare is created beyond them, and
stopping the bus stops the spares too.

What is asserted is behaviour, never speed: how fast a spare serves is a benchmark figure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import ray

from cluster.bus import bus_status, launch_bus, start_spares, stop_bus
from cluster.naming import actor_names, get_actor_async
from tests.cluster.bus_helpers import bus_config, running_bus

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CPUS_PER_WORKER = 0.5
SLOTS = 4
CALLS = 120
# One worker needs CALLS / SLOTS * NAP_S = 30 s for the burst: the autoscaler decides,
# and the activated spare joins, long before the queue drains, however loaded the machine.
NAP_S = 1.0
# Bounds on waiting, sized for a cold, loaded 2-core machine; they measure nothing.
WAIT_S = 180.0


async def _eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - the state lives in other actors
            await asyncio.sleep(0.1)  # polling the bus from outside


async def test_a_burst_activates_the_warm_spare_which_serves_within_the_cpu_ceiling(
    ray_session: None,
) -> None:
    pool = {
        "name": "kit",
        "server": "cluster.examples.testkit:server",
        "min_workers": 1,
        "max_workers": 8,
        "max_concurrency": SLOTS,
        "num_cpus": CPUS_PER_WORKER,
        "warm_spares": 1,
        "autoscale": {
            "target_per_worker": SLOTS,
            "upscale_delay_s": 0.5,
            "downscale_window_s": 600,  # no scale-down while the test looks
        },
    }
    config = bus_config([pool], autoscaler={"enabled": True, "interval_s": 0.25})
    bus = config.name
    async with running_bus(config) as client:
        supervisor = await get_actor_async(actor_names.supervisor(bus))
        router = await get_actor_async(actor_names.router(bus))
        spares: list[str] = []

        async def spare_ready() -> bool:
            spares[:] = (await supervisor.spares.remote())["kit"]
            return bool(spares)

        await _eventually(spare_ready)
        (spare,) = spares
        # Started, but neither routed nor counted: the pool is one worker of 4 slots.
        lag: dict[str, Any] = (await router.lag.remote())["kit"]
        assert (lag["workers"], lag["capacity"]) == (1, SLOTS)
        assert spare not in (await supervisor.workers.remote())["kit"]
        assert (await bus_status(bus))["pools"]["kit"]["target"] == 1

        calls = [("nap", {"seconds": NAP_S}) for _ in range(CALLS)]
        results = await client.map_tool_calls(calls, concurrency=CALLS, timeout_s=WAIT_S)
        assert not [r for r in results if isinstance(r, Exception)]

        # The spare was activated by the scale-up and served calls of the burst.
        workers = (await supervisor.workers.remote())["kit"]
        assert spare in workers
        handle = await get_actor_async(spare)
        assert (await handle.status.remote())["served"] > 0

        # The pool grew only by what 2 CPUs run at 0.5 each, and said so.
        decisions: list[dict[str, Any]] = (await bus_status(bus))["decisions"]
        ups = [d for d in decisions if d["pool"] == "kit" and d["desired"] > d["current"]]
        assert ups, "no scale-up decision for the burst"
        resources: dict[str, float] = await asyncio.to_thread(ray.cluster_resources)
        total_cpus = resources["CPU"]
        assert all(d["desired"] * CPUS_PER_WORKER <= total_cpus for d in ups), ups
        assert any("ceiling" in d["reason"] for d in decisions), decisions
        # Workers and spares together never reserve more CPUs than the cluster has.
        spare_count = len((await supervisor.spares.remote())["kit"])
        assert (len(workers) + spare_count) * CPUS_PER_WORKER <= total_cpus

    def bus_actors() -> list[str]:
        prefix = f"raybus/{bus}/"
        named = ray.util.list_named_actors(all_namespaces=True)
        return [a["name"] for a in named if a["name"].startswith(prefix)]

    async def all_stopped() -> bool:
        return not await asyncio.to_thread(bus_actors)

    await _eventually(all_stopped)


async def test_spares_held_at_launch_start_only_when_asked(ray_session: None) -> None:
    # `raybus up` holds them until its gateway serves: on two cores a spare's start
    # (a process and the server's imports) competes with the rest of the bus's start.
    pool = {
        "name": "kit",
        "server": "cluster.examples.testkit:server",
        "min_workers": 1,
        "max_workers": 3,
        "warm_spares": 1,
    }
    config = bus_config([pool], autoscaler={"enabled": True, "interval_s": 0.25})
    bus = config.name
    await launch_bus(config, spares_later=True)
    try:
        supervisor = await get_actor_async(actor_names.supervisor(bus))
        assert await supervisor.spares.remote() == {"kit": []}
        assert (await bus_status(bus))["pools"]["kit"]["target"] == 1

        await start_spares(bus)

        async def spare_ready() -> bool:
            return bool((await supervisor.spares.remote())["kit"])

        await _eventually(spare_ready)
    finally:
        await stop_bus(bus)
