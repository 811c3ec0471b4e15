"""A burst on real Ray: the pool grows within seconds, answers every call, then shrinks."""

from __future__ import annotations

import asyncio
import time

import pytest

from cluster.bus import bus_status
from tests.cluster.bus_helpers import bus_config, running_bus

pytestmark = [pytest.mark.ray, pytest.mark.slow]


async def test_a_burst_grows_the_pool_every_call_is_answered_and_it_shrinks_back(
    ray_session: None,
) -> None:
    pool = {
        "name": "kit",
        "server": "cluster.examples.testkit:server",
        "min_workers": 1,
        "max_workers": 6,
        "max_concurrency": 8,
        "autoscale": {
            "target_per_worker": 8,
            "upscale_delay_s": 0.5,
            "downscale_window_s": 2,
            "max_step_down": 5,
        },
    }
    config = bus_config([pool], autoscaler={"enabled": True, "interval_s": 0.25})
    async with running_bus(config) as client:
        started = time.monotonic()
        seen_workers = {1}
        calls = [("nap", {"seconds": 0.2}) for _ in range(300)]
        async with asyncio.TaskGroup() as group:
            burst = group.create_task(client.map_tool_calls(calls, concurrency=300, timeout_s=120))
            while not burst.done():
                seen_workers.add((await bus_status(config.name))["pools"]["kit"]["workers"])
                await asyncio.wait({burst}, timeout=0.25)
        results = burst.result()
        answered = time.monotonic() - started
        assert [r.structured_content for r in results] == [{"result": "slept 0.2"}] * 300  # type: ignore[union-attr]
        assert max(seen_workers) >= 4, seen_workers
        async with asyncio.timeout(60):
            while (await bus_status(config.name))["pools"]["kit"]["workers"] != 1:  # noqa: ASYNC110
                await asyncio.sleep(0.25)  # polling the router from outside
        shrunk = time.monotonic() - started
        status = await bus_status(config.name)
        ups = [d for d in status["decisions"] if d["desired"] > d["current"]]
        downs = [d for d in status["decisions"] if d["desired"] < d["current"]]
        assert ups
        assert downs
        assert answered < shrunk
