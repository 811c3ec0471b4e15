"""Run one pool and the gateway over a two-node Ray cluster (``ray.cluster_utils.Cluster``).

Started as a subprocess by ``test_multinode.py``: a second cluster cannot share the test
session's process with the session's local Ray. Prints one JSON line with what it saw.
"""

from __future__ import annotations

import asyncio
import json
import sys

import mcp
import ray
from mcp.client.streamable_http import streamable_http_client
from ray.cluster_utils import Cluster
from ray.exceptions import RayActorError

from cluster.bus import launch_bus, stop_bus
from cluster.client import BusClient
from cluster.config import parse_config
from cluster.naming import NAMESPACE
from cluster.ray_actors.gateway import GatewayReplicas

_GONE_S = 60.0  # a killed actor's end, on a loaded 2-core machine


async def _until_gone(handle: object) -> None:
    """``ray.kill`` returns before the actor is dead: until then it may still answer a
    ping, and the replicas' check would rightly leave it be (a loaded test run did)."""
    async with asyncio.timeout(_GONE_S):
        while True:
            try:
                await handle.ping.remote()  # type: ignore[attr-defined]
            except RayActorError:
                return
            await asyncio.sleep(0.1)  # polling: Ray has no "actor ended" wait


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
    replicas = GatewayReplicas(config, port=0)
    try:
        results = await client.map_tool_calls([("whoami", {}) for _ in range(100)], concurrency=16)
        served_by = [
            r.structured_content.get("node")
            for r in results
            if not isinstance(r, Exception) and r.structured_content
        ]
        await replicas.reconcile()
        gateway = {
            info.node_id: await _calls_through(replicas.url(info)) for info in replicas.replicas
        }
        # A replica that dies is replaced on its node at the next check.
        victim = replicas.replicas[0]
        killed = ray.get_actor(victim.actor_name, namespace=NAMESPACE)
        ray.kill(killed)
        await _until_gone(killed)
        replaced = await replicas.reconcile()
        after_kill = [(info.node_id, await _calls_through(replicas.url(info))) for info in replaced]
    finally:
        await replicas.stop()
        await client.close()
        await stop_bus(config.name)
    return {
        "nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),  # type: ignore[no-untyped-call]
        "served_by": sorted(set(filter(None, served_by))),
        "answered": len(served_by),
        "gateway_answered": gateway,
        "killed": victim.node_id,
        "replaced": after_kill,
    }


async def _calls_through(url: str) -> int:
    """How many of 20 echo calls through the gateway at ``url`` came back right."""
    async with mcp.Client(streamable_http_client(url), mode="legacy") as session:
        answers = [await session.call_tool("echo", {"text": f"n{i}"}) for i in range(20)]
    return sum(a.structured_content == {"result": f"n{i}"} for i, a in enumerate(answers))


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
