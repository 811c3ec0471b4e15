"""Run one pool over a two-node Ray cluster (``ray.cluster_utils.Cluster``) and report.

Started as a subprocess by ``test_multinode.py``: a second cluster cannot share the test
session's process with the session's local Ray. Prints one JSON line with what it saw.
"""

from __future__ import annotations

import asyncio
import json
import sys

import ray
from ray.cluster_utils import Cluster

from cluster.bus import launch_bus, stop_bus
from cluster.client import BusClient
from cluster.config import parse_config


async def exercise() -> dict[str, object]:
    config = parse_config(
        {
            "name": "multinode",
            "pools": [
                {
                    "name": "kit",
                    "server": "cluster.examples.testkit:server",
                    "min_workers": 2,
                    "num_cpus": 1,
                }
            ],
            "discovery": {"heartbeat_interval_s": 0.2, "ttl_s": 2},
        }
    )
    await launch_bus(config)
    client = await BusClient.connect(config.name)
    try:
        results = await client.map_tool_calls([("whoami", {}) for _ in range(100)], concurrency=16)
        served_by = [
            r.structured_content.get("node")
            for r in results
            if not isinstance(r, Exception) and r.structured_content
        ]
    finally:
        await client.close()
        await stop_bus(config.name)
    return {
        "nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),  # type: ignore[no-untyped-call]
        "served_by": sorted(set(filter(None, served_by))),
        "answered": len(served_by),
    }


def main() -> int:
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        print(json.dumps(asyncio.run(exercise())))
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]
    return 0


if __name__ == "__main__":
    sys.exit(main())
