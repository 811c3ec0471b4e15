"""The gateway runs as a Ray actor that receives its answers directly."""

from __future__ import annotations

import mcp
import pytest
import ray

from cluster.naming import NAMESPACE
from cluster.services.process import poll_until
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


def _socket_requests(replica: object) -> int:
    """Requests the replica's direct lane sent on workers' Unix sockets (run inside it)."""
    lane = replica._client._connection.link.direct  # type: ignore[attr-defined]
    connections = lane.sockets._connections.values()
    return sum(c.requests_sent for c in connections if c is not None)


async def test_the_replica_sends_tool_calls_on_the_workers_socket(ray_session: None) -> None:
    # A replica's event loop is uvloop (Ray's), which refuses to connect to an abstract
    # socket name by path: its calls once all went as Ray actor calls, unnoticed.
    config = bus_config(
        [{"name": "kit", "server": "cluster.examples.testkit:server", "min_workers": 1}]
    )
    bus = f"raybus/{config.name}"
    async with running_gateway(config) as url:
        (name,) = named_actors(f"{bus}/gateway/")
        replica = ray.get_actor(name, namespace=NAMESPACE)
        async with mcp.Client(url, mode="legacy") as client:
            # The first calls go by Ray while the replica connects in the background.
            async def sent_on_socket() -> bool:
                answered = await client.call_tool("echo", {"text": "x"})
                assert answered.structured_content == {"result": "x"}
                return bool(await replica.__ray_call__.remote(_socket_requests))

            await poll_until(sent_on_socket, timeout_s=60)
