"""The gateway runs as a Ray actor that receives its answers directly."""

from __future__ import annotations

import mcp
import pytest
import ray

from cluster.naming import NAMESPACE
from tests.cluster.bus_helpers import bus_config, running_gateway

pytestmark = [pytest.mark.ray, pytest.mark.asyncio]


def named_actors(prefix: str) -> list[str]:
    names = ray.util.list_named_actors(all_namespaces=True)
    return sorted(
        a["name"] for a in names if a["namespace"] == NAMESPACE and a["name"].startswith(prefix)
    )


async def test_the_gateway_is_a_replica_actor_with_no_mailbox_to_poll(ray_session: None) -> None:
    config = bus_config(
        [{"name": "kit", "server": "cluster.examples.testkit:server", "min_workers": 1}]
    )
    bus = f"raybus/{config.name}"
    async with running_gateway(config) as url:
        async with mcp.Client(url, mode="legacy") as client:
            answered = await client.call_tool("echo", {"text": "direct"})
        assert answered.structured_content == {"result": "direct"}
        assert len(named_actors(f"{bus}/gateway/")) == 1  # one node, one replica
        # Workers answered the replica itself: no client mailbox actor was created.
        assert named_actors(f"{bus}/client/") == []
    assert named_actors(f"{bus}/gateway/") == []  # stopped with the gateway
