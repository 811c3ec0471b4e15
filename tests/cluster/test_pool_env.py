"""A pool's env reaches its in-process server on a real Ray; status shows its names only."""

from __future__ import annotations

import json

import pytest

from cluster.bus import bus_status
from cluster.cli.status import format_status
from tests.cluster.bus_helpers import bus_config, running_bus

pytestmark = [pytest.mark.ray]

SECRET = "pool-secret-7f3a"


async def test_a_tools_pool_server_reads_its_env_and_status_never_shows_the_value(
    ray_session: None,
) -> None:
    config = bus_config(
        [
            {
                "name": "envy",
                "tools": "tests.cluster.env_tools",
                "env": {"RAYBUS_POOL_SECRET": SECRET},
                "runtime_env": {"env_vars": {"RAYBUS_RUNTIME_FLAG": "on"}},
            }
        ]
    )
    async with running_bus(config) as client:
        secret = await client.call_tool("environment_variable", {"name": "RAYBUS_POOL_SECRET"})
        flag = await client.call_tool("environment_variable", {"name": "RAYBUS_RUNTIME_FLAG"})
        status = await bus_status(config.name)
    assert secret.structured_content == {"result": SECRET}
    assert flag.structured_content == {"result": "on"}
    assert status["pools"]["envy"]["env"] == ["RAYBUS_POOL_SECRET", "RAYBUS_RUNTIME_FLAG"]
    assert SECRET not in json.dumps(status)
    assert SECRET not in format_status(status)
    assert "env RAYBUS_POOL_SECRET, RAYBUS_RUNTIME_FLAG (values hidden)" in format_status(status)
