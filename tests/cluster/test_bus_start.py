"""Starting a bus on a real local Ray: a pool that cannot start ends start-up at once.

Each failure must arrive as one line naming the pool and the reason, long before the
generic start-up timeout, and leave no actor of the bus behind.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
import ray

from cluster.bus import PoolStartFailed, bus_status, launch_bus
from cluster.naming import NAMESPACE, actor_names, get_actor
from tests.cluster.bus_helpers import bus_config, running_bus

pytestmark = pytest.mark.ray

KIT = {"name": "kit", "server": "cluster.examples.testkit:server"}
# Far below launch_bus's own 120 s timeout, far above a cold start on two loaded cores.
FAILS_WITHIN_S = 60


def actors_of(bus: str) -> list[str]:
    prefix = f"raybus/{bus}/"
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == NAMESPACE and a["name"].startswith(prefix)
    ]


@pytest.mark.parametrize(
    ("pool", "reason"),
    [
        (
            {"name": "typo", "server": "cluster.examples.testkitt:server"},
            "No module named 'cluster.examples.testkitt'",
        ),
        ({"name": "nocmd", "command": ["raybus-no-such-command"]}, "raybus-no-such-command"),
        (
            {
                "name": "quits",
                "command": [sys.executable, "-c", "import sys; sys.exit('bad server setup')"],
            },
            "bad server setup",
        ),
    ],
    ids=["misspelled-import", "missing-command", "exits-at-once"],
)
async def test_a_pool_that_cannot_start_ends_start_up_with_its_name_and_reason(
    ray_session: None, pool: dict[str, Any], reason: str
) -> None:
    # A healthy pool beside it must not hide the failure nor survive it.
    config = bus_config([KIT, pool])
    with pytest.raises(PoolStartFailed) as caught:
        async with asyncio.timeout(FAILS_WITHIN_S):
            await launch_bus(config)
    message = str(caught.value)
    assert message.startswith(f"pool {pool['name']!r} failed to start: ")
    assert reason in message
    assert "\n" not in message
    assert "Traceback" not in message
    assert await asyncio.to_thread(actors_of, config.name) == []


async def test_status_lists_every_pool_while_the_bus_runs(ray_session: None) -> None:
    config = bus_config([KIT, {**KIT, "name": "idle", "min_workers": 0}])
    async with running_bus(config) as client:
        status = await bus_status(client.bus)
    assert set(status["pools"]) == {"kit", "idle"}
    assert status["pools"]["idle"]["workers"] == 0
    assert status["pools"]["kit"]["last_failure"] is None


async def test_a_worker_that_cannot_start_later_is_reported_and_retried_until_it_can(
    ray_session: None, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    # A server that fails until its setting appears, then serves.
    script = (
        "import os, runpy, sys\n"
        f"if not os.path.exists({str(ready)!r}): sys.exit('setting not there yet')\n"
        "runpy.run_module('cluster.examples.calculator', run_name='__main__')\n"
    )
    pool = {"name": "calc", "command": [sys.executable, "-c", script], "min_workers": 0}
    config = bus_config([KIT, pool])
    async with running_bus(config) as client:
        supervisor = get_actor(actor_names.supervisor(config.name))
        await supervisor.scale.remote("calc", 1)
        status = await bus_status(client.bus)
        assert "setting not there yet" in status["pools"]["calc"]["last_failure"]
        ready.write_text("yes")

        async def calc_workers() -> int:
            workers: int = (await bus_status(client.bus))["pools"]["calc"]["workers"]
            return workers

        async with asyncio.timeout(FAILS_WITHIN_S):
            while await calc_workers() < 1:  # noqa: ASYNC110 - remote state
                await asyncio.sleep(0.1)
        added = await client.call_tool("add", {"a": 1, "b": 2})
        assert added.structured_content == {"result": 3.0}
        assert (await bus_status(client.bus))["pools"]["calc"]["last_failure"] is None
