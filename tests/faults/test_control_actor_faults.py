"""Issue 18, case 3: kill each control actor under load (Ray backend).

The router, discovery, the autoscaler and the supervisor are killed in turn (one bus
each), while callers keep calling; Ray restarts each (``max_restarts=-1``). Every call
must end with an outcome (a result, or an error such as 1004 "may have run"), none after
its deadline plus the checker's grace, none crossed, and the restarted actor must do its
job again: the router routes, discovery re-learns the workers and tells the router of
new ones, the autoscaler decides again, the supervisor supervises the workers it had.

How long each took is printed (``FAULT-FIGURES``, run with ``-s``) for the suite's table;
the waits only bound it, as every wait here is sized for a cold, loaded 2-core machine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import ray
import ray._private.state as ray_state

from cluster.client import BusClient
from cluster.naming import actor_names, get_actor, process_of
from tests.cluster.bus_helpers import bus_config, running_bus
from tests.faults.history import check
from tests.faults.scale import scaled
from tests.faults.steady_load import SteadyLoad, figures, first_ok_after, now, poll_until
from transports.errors import BusErrorCode

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CALLERS = 16
BEFORE = scaled(60, 600)  # calls answered before the kill: the load is steady
AFTER = scaled(120, 1200)  # calls answered after the actor is back
# The router's callers call back to back (calls wait in its queue when it dies; while it
# restarts they wait, so the count lasts). The others pace theirs: the load has to
# outlast a recovery of seconds (a worker's start), at about 30 calls/s.
ROUTER_CALLS = BEFORE + AFTER + CALLERS
PACED_LIMIT = scaled(2000, 20000)  # a cap that stops a runaway load, not its length
# Few slots per worker, so calls also wait in the router's queue when it is killed.
POOL = {
    "name": "kit",
    "server": "cluster.examples.testkit:server",
    "min_workers": 2,
    "max_workers": 3,
    "max_concurrency": 4,
    "warm_spares": 0,
}
# A killed worker's calls may have run (echo is not marked idempotent): 1004. A call
# whose deadline passes while the bus recovers: 1001 (on time; a late one is hung).
MAY_HAPPEN = {BusErrorCode.OUTCOME_UNKNOWN, BusErrorCode.DEADLINE_EXCEEDED}
RECOVERY_BOUND_S = 120.0  # stops a hang; the recovery time itself is a printed figure


async def restart(name: str) -> float:
    """Kill a control actor and let Ray restart it; returns when (``now()``).

    Discovery, the supervisor and the autoscaler share one process
    (``cluster.ray_actors.control``): killing one kills and restarts all three. Then it
    returns once the cluster counts the restart, so no check made after it can still be
    answered by the process being killed (``ray.kill`` does not wait for the death).
    """
    handle = get_actor(name)
    process = process_of(handle)
    restarts_before = _restarts(process)
    killed_at = now()
    ray.kill(process, no_restart=False)
    if process is not handle:

        async def counted() -> bool:
            return await asyncio.to_thread(_restarts, process) > restarts_before

        await poll_until(counted, RECOVERY_BOUND_S)
    return killed_at


def _restarts(process: Any) -> int:
    """How many times Ray has restarted this actor (the cluster's own record)."""
    info = ray_state.actors(actor_id=process._actor_id.hex())
    return int(info["NumRestarts"])


def paced(client: BusClient) -> SteadyLoad:
    return SteadyLoad(client, callers=CALLERS, limit=PACED_LIMIT, pause_s=0.5)


async def router_workers(bus: str) -> int:
    lag: dict[str, dict[str, Any]] = await get_actor(actor_names.router(bus)).lag.remote()
    workers: int = lag.get("kit", {}).get("workers", 0)
    return workers


async def test_a_killed_router_restarts_and_every_call_it_held_ends_by_its_deadline(
    ray_session: None,
) -> None:
    config = bus_config([POOL])
    async with running_bus(config) as client:
        load = SteadyLoad(client, callers=CALLERS, limit=ROUTER_CALLS)
        load.start()
        await load.run_for(BEFORE)
        killed_at = await restart(actor_names.router(config.name))
        await load.run_for(AFTER)
        await load.stop()
    verdict = check(load.history)
    recovery = first_ok_after(load.history, killed_at)
    figures("3 router", verdict, load, recovery_s=recovery)
    assert verdict.clean, verdict
    assert set(verdict.errors) <= MAY_HAPPEN, verdict
    assert recovery is not None  # calls made after the kill were served


async def test_a_killed_discovery_relearns_the_workers_and_the_router_hears_of_new_ones(
    ray_session: None,
) -> None:
    config = bus_config([POOL])
    bus = config.name
    async with running_bus(config) as client:
        supervisor = get_actor(actor_names.supervisor(bus))
        workers = set((await supervisor.workers.remote())["kit"])
        load = paced(client)
        load.start()
        await load.run_for(BEFORE)
        killed_at = await restart(actor_names.discovery(bus))

        async def relearned() -> bool:
            live = await get_actor(actor_names.discovery(bus)).workers.remote()
            return {w.actor_name for w in live} >= workers

        await poll_until(relearned, RECOVERY_BOUND_S)
        relearned_s = now() - killed_at
        # A worker that starts after the restart reaches the router only through the
        # restarted discovery's snapshots.
        scaled_at = now()
        assert await supervisor.scale.remote("kit", 3) == 3

        async def routed() -> bool:
            return await router_workers(bus) == 3

        await poll_until(routed, RECOVERY_BOUND_S)
        new_worker_routed_s = now() - scaled_at
        assert not load.exhausted  # the load ran through the whole recovery
        await load.run_for(AFTER)
        await load.stop()
    verdict = check(load.history)
    figures(
        "3 discovery",
        verdict,
        load,
        recovery_s=first_ok_after(load.history, killed_at),
        relearned_s=relearned_s,
        new_worker_routed_s=new_worker_routed_s,
    )
    assert verdict.clean, verdict
    assert set(verdict.errors) <= MAY_HAPPEN, verdict


async def test_a_killed_autoscaler_restarts_and_decides_again(ray_session: None) -> None:
    pool = {**POOL, "autoscale": {"target_per_worker": 4, "upscale_delay_s": 0.5}}
    config = bus_config([pool], autoscaler={"enabled": True, "interval_s": 0.25})
    bus = config.name
    async with running_bus(config) as client:
        load = paced(client)
        load.start()
        await load.run_for(BEFORE)
        killed_at = await restart(actor_names.autoscaler(bus))
        killed_wall = time.time()

        async def deciding() -> bool:
            decisions = await get_actor(actor_names.autoscaler(bus)).decisions.remote(5)
            return any(d["wall_time"] > killed_wall for d in decisions)

        await poll_until(deciding, RECOVERY_BOUND_S)
        deciding_s = now() - killed_at
        assert not load.exhausted
        await load.run_for(AFTER)
        await load.stop()
    verdict = check(load.history)
    figures("3 autoscaler", verdict, load, deciding_again_s=deciding_s)
    assert verdict.clean, verdict
    assert set(verdict.errors) <= MAY_HAPPEN, verdict


async def test_a_killed_supervisor_adopts_its_workers_and_replaces_one_that_dies(
    ray_session: None,
) -> None:
    config = bus_config([POOL])
    bus = config.name
    async with running_bus(config) as client:
        # Scaled over its minimum (2) first: a restarted supervisor keeps that size.
        assert await get_actor(actor_names.supervisor(bus)).scale.remote("kit", 3) == 3

        async def grown() -> bool:
            return await router_workers(bus) == 3

        await poll_until(grown, RECOVERY_BOUND_S)
        workers = set((await get_actor(actor_names.supervisor(bus)).workers.remote())["kit"])
        load = paced(client)
        load.start()
        await load.run_for(BEFORE)
        killed_at = await restart(actor_names.supervisor(bus))

        seen: list[Any] = []

        async def adopted() -> bool:
            pools = await get_actor(actor_names.supervisor(bus)).pools.remote()
            seen.append(pools["kit"])
            # Its size from before the kill, not min_workers (2) from the config.
            return bool(pools["kit"]["workers"] == pools["kit"]["target"] == 3)

        try:
            await poll_until(adopted, RECOVERY_BOUND_S)
        except TimeoutError:
            pytest.fail(f"the restarted supervisor did not adopt its workers: {seen[-1:]}")
        adopted_s = now() - killed_at
        supervisor = get_actor(actor_names.supervisor(bus))
        await load.run_for(BEFORE)  # calls go on meanwhile; no worker was retired
        assert set((await supervisor.workers.remote())["kit"]) == workers
        # Supervising again: a worker that dies now is replaced.
        victim = sorted(workers)[0]
        died_at = now()
        ray.kill(get_actor(victim), no_restart=True)

        async def replaced() -> bool:
            names = set((await supervisor.workers.remote())["kit"])
            return victim not in names and len(names) == 3 and await router_workers(bus) == 3

        await poll_until(replaced, RECOVERY_BOUND_S)
        replaced_s = now() - died_at
        assert not load.exhausted
        await load.run_for(AFTER)
        await load.stop()
    verdict = check(load.history)
    figures("3 supervisor", verdict, load, adopted_s=adopted_s, worker_replaced_s=replaced_s)
    assert verdict.clean, verdict
    assert set(verdict.errors) <= MAY_HAPPEN, verdict
