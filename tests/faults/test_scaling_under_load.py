"""Issue 18, case 7: a pool scaled down and up under load loses nothing.

On Ray the supervisor resizes the pool while callers keep calling: a scale-down retires
a worker at the router and drains it before it stops, so no call it held is lost or
failed. On Kafka the same resizes add and remove consumers of the pool's group, so the
broker rebalances its partitions while requests stream through; a request whose worker
gave up its partition mid-call is redelivered to another (at least once; the client
keeps the first answer).

Each step waits until the router (Ray) or the supervisor (Kafka) has the new size, then
lets the load run on; the figures are printed (``FAULT-FIGURES``, run with ``-s``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from cluster.naming import actor_names, get_actor
from tests.cluster.bus_helpers import bus_config, running_bus
from tests.faults.history import check
from tests.faults.scale import scaled
from tests.faults.steady_load import SteadyLoad, figures, now, poll_until

# Paced at about 30 calls/s, so the load outlasts the resizes (worker starts included).
CALLERS = 16
PAUSE_S = 0.5
LIMIT = scaled(3000, 30000)  # a cap that stops a runaway load, not its length
SIZES = [3, 1, 2, 1, 3] * scaled(1, 4)
# Each Kafka resize is a rebalance of the group (seconds): fewer steps, same directions.
KAFKA_SIZES = [3, 1, 2] * scaled(1, 4)
PER_STEP = scaled(60, 600)  # calls answered at each size
SETTLE_BOUND_S = 180.0  # a worker start on a cold, loaded 2-core machine: stops a hang
KIT = {"name": "kit", "server": "cluster.examples.testkit:server", "warm_spares": 0}


async def resize_under_load(
    load: SteadyLoad,
    bus: str,
    sizes: list[int],
    size_now: Callable[[], Awaitable[int]],
    resize_s: list[float],
) -> None:
    """Step the pool through ``sizes`` while the load runs; each step's time kept."""
    supervisor = get_actor(actor_names.supervisor(bus))
    await load.run_for(PER_STEP)
    for size in sizes:
        started = now()
        assert await supervisor.scale.remote("kit", size) == size

        async def settled(size: int = size) -> bool:
            return bool(await size_now() == size)

        await poll_until(settled, SETTLE_BOUND_S)
        resize_s.append(now() - started)
        assert not load.exhausted  # the resize happened under load
        await load.run_for(PER_STEP)


@pytest.mark.ray
@pytest.mark.slow
async def test_resizing_a_ray_pool_under_load_loses_and_fails_no_call(ray_session: None) -> None:
    config = bus_config([{**KIT, "min_workers": 1, "max_workers": 3, "max_concurrency": 4}])
    bus = config.name

    async def routed() -> int:
        lag: dict[str, dict[str, Any]] = await get_actor(actor_names.router(bus)).lag.remote()
        workers: int = lag.get("kit", {}).get("workers", 0)
        return workers

    resize_s: list[float] = []
    async with running_bus(config) as client:
        load = SteadyLoad(client, callers=CALLERS, limit=LIMIT, pause_s=PAUSE_S)
        load.start()
        await resize_under_load(load, bus, SIZES, routed, resize_s)
        await load.stop()
    verdict = check(load.history)
    figures("7 ray resize", verdict, load, slowest_resize_s=max(resize_s))
    assert verdict.clean, verdict
    # Retiring drains: the calls a worker held finish there, nothing is refused.
    assert verdict.ok == verdict.total, verdict


@pytest.mark.kafka
@pytest.mark.ray
@pytest.mark.slow
async def test_resizing_a_kafka_pool_under_load_rebalances_and_loses_no_call(
    ray_session: None, kafka_bootstrap: str
) -> None:
    config = bus_config(
        [{**KIT, "min_workers": 1, "max_workers": 3, "max_concurrency": 16}],
        backend="kafka",
        kafka={"bootstrap": kafka_bootstrap, "partitions": 4},
    )
    bus = config.name

    async def serving() -> int:
        pools = await get_actor(actor_names.supervisor(bus)).pools.remote()
        workers: int = pools["kit"]["workers"]
        return workers

    resize_s: list[float] = []
    async with running_bus(config) as client:
        # A rebalance holds a group's partitions for seconds: deadlines allow for it.
        load = SteadyLoad(client, callers=CALLERS, limit=LIMIT, deadline_s=60, pause_s=PAUSE_S)
        load.start()
        await resize_under_load(load, bus, KAFKA_SIZES, serving, resize_s)
        await load.stop()
    verdict = check(load.history)
    figures("7 kafka resize", verdict, load, slowest_resize_s=max(resize_s))
    assert verdict.clean, verdict
    assert verdict.ok == verdict.total, verdict
