"""Per-pool resources and node labels on a two-node Ray cluster (``ray.cluster_utils``).

The second node alone has the custom resource ``accel`` (2 of it) and the label
``zone=b``. A pool whose workers need ``accel`` and a pool selecting ``zone=b`` must
both run there only, and a burst on the ``accel`` pool may not grow it past the two
workers that node can hold: the autoscaler's decision says so.

Started as a subprocess by ``test_multinode.py`` (a second cluster cannot share the test
session's process with the session's local Ray). Prints one JSON line with what it saw.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import ray
from ray.cluster_utils import Cluster

from cluster.bus import bus_status, launch_bus, stop_bus
from cluster.client import BusClient
from cluster.config import parse_config
from cluster.naming import actor_names, get_actor_async

# Bounds on waiting, sized for a cold, loaded 2-core machine; they measure nothing.
WAIT_S = 180.0


async def exercise(accel_node: str) -> dict[str, Any]:
    config = parse_config(
        {
            "name": "resources",
            "pools": [
                {
                    "name": "accel",
                    "server": "cluster.examples.testkit:server",
                    "resources": {"accel": 1},
                    "min_workers": 1,
                    "max_workers": 4,
                    "max_concurrency": 2,
                    "warm_spares": 0,
                    "autoscale": {
                        "target_per_worker": 2,
                        "upscale_delay_s": 0.2,
                        "downscale_window_s": 600,  # no scale-down while we look
                    },
                },
                {
                    "name": "zoned",
                    "tools": "cluster.examples.functions",
                    "label_selector": {"zone": "b"},
                    "min_workers": 2,
                    "max_workers": 2,
                },
            ],
            "discovery": {"heartbeat_interval_s": 0.2, "ttl_s": 5},
            "autoscaler": {"interval_s": 0.25},
        }
    )
    await launch_bus(config)
    client = await BusClient.connect(config.name)
    try:
        placed = await bus_status(config.name)
        naps = [("nap", {"seconds": 1.0}) for _ in range(40)]
        burst = asyncio.create_task(client.map_tool_calls(naps, concurrency=40, timeout_s=WAIT_S))
        autoscaler = await get_actor_async(actor_names.autoscaler(config.name))
        capped: list[dict[str, Any]] = []
        async with asyncio.timeout(WAIT_S):
            while not capped:
                decisions = await autoscaler.decisions.remote(200)
                capped = [d for d in decisions if d["pool"] == "accel" and "accel" in d["reason"]]
                await asyncio.sleep(0.2)  # polling the autoscaler from outside
        results = await burst
        after = await bus_status(config.name)
        every = await autoscaler.decisions.remote(config.autoscaler.decisions_kept)
    finally:
        await client.close()
        await stop_bus(config.name)
    targets = [d["desired"] for d in every if d["pool"] == "accel"]
    return {
        "accel_node": accel_node[:8],
        "workers_at_start": _workers(placed),
        "workers_after_burst": _workers(after),
        "answered": sum(not isinstance(r, Exception) and not r.is_error for r in results),
        "capped_reason": capped[0]["reason"],
        "highest_target": max([after["pools"]["accel"]["target"], *targets]),
        "status_row": {k: after["pools"]["accel"][k] for k in ("resources", "env")},
    }


def _workers(status: dict[str, Any]) -> dict[str, list[str]]:
    by_pool: dict[str, list[str]] = {}
    for worker in status["workers"]:
        by_pool.setdefault(worker["pool"], []).append(worker["node"])
    return by_pool


def main() -> int:
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        node = cluster.add_node(num_cpus=1, resources={"accel": 2}, labels={"zone": "b"})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        print(json.dumps(asyncio.run(exercise(node.node_id))))
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]
    return 0


if __name__ == "__main__":
    sys.exit(main())
