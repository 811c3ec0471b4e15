"""The reference TypeScript server, unmodified, as a stdio pool (fetched by npx)."""

from __future__ import annotations

import shutil

import pytest

from tests.cluster.bus_helpers import bus_config, running_bus

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.mark.skipif(shutil.which("npx") is None, reason="needs Node.js (npx) on the machine")
async def test_the_reference_everything_server_serves_tools_through_the_bus(
    ray_session: None,
) -> None:
    command = ["npx", "-y", "@modelcontextprotocol/server-everything@2026.8.31"]
    config = bus_config([{"name": "everything", "command": command, "min_workers": 1}])
    async with running_bus(config) as client:
        tools = {tool.name for tool in await client.list_tools()}
        assert "echo" in tools
        result = await client.call_tool("echo", {"message": "through raybus"}, timeout_s=60)
        assert "through raybus" in result.content[0].text  # type: ignore[union-attr]
