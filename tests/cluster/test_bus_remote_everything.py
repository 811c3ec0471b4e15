"""The reference TypeScript server, unmodified, as a remote pool over Streamable HTTP.

Installed from npm into the project's cache (:mod:`tests.everything_server`) and run in
its ``streamableHttp`` mode on a free loopback port; the pool names it by ``url:``.
"""

from __future__ import annotations

import asyncio
import shutil

import pytest

from tests.cluster.bus_helpers import bus_config, running_bus
from tests.everything_server import ensure_everything, everything_http_command
from tests.upstream_process import running_upstream

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="needs Node.js (node and npm) on the machine",
)
async def test_the_reference_everything_server_serves_as_a_remote_pool(
    ray_session: None,
) -> None:
    entry = await asyncio.to_thread(ensure_everything)
    node = shutil.which("node") or "node"

    def command(port: int) -> list[str]:
        return ["env", f"PORT={port}", *everything_http_command(entry, node)]

    async with running_upstream(command, ready=r"listening on port \d+") as upstream:
        pool = {"name": "everything", "url": upstream.url, "warm_spares": 0}
        async with running_bus(bus_config([pool])) as client:
            tools = {tool.name for tool in await client.list_tools()}
            assert {"echo", "get-sum"} <= tools
            echoed = await client.call_tool("echo", {"message": "over http"}, timeout_s=60)
            assert "over http" in echoed.content[0].text  # type: ignore[union-attr]
            calls = [("get-sum", {"a": n, "b": 1}) for n in range(20)]
            sums = await client.map_tool_calls(calls, concurrency=8, timeout_s=60)
            texts = [s.content[0].text for s in sums]  # type: ignore[union-attr]
            assert all(str(n + 1) in text for n, text in enumerate(texts)), texts
