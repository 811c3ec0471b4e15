"""`raybus up` as a user runs it: its own local Ray, HTTP or stdio, stopped by a signal."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import mcp
import pytest
from mcp.client.stdio import StdioServerParameters

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CONFIG = """
name: uptest
pools:
  - name: kit
    server: "cluster.examples.testkit:server"
gateway:
  port: {port}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_raybus_up_serves_http_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "bus.yaml"
    config.write_text(CONFIG.format(port=port))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cluster.cli", "up", str(config), stderr=asyncio.subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        async with asyncio.timeout(120):
            while b"serving MCP at" not in (line := await process.stderr.readline()):
                assert line, "raybus up exited before serving"
        async with mcp.Client(f"http://127.0.0.1:{port}/mcp") as client:
            result = await client.call_tool("echo", {"text": "over http"})
        assert result.structured_content == {"result": "over http"}
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(120):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()


async def test_raybus_up_stdio_serves_a_stdio_client(tmp_path: Path) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text(CONFIG.format(port=0))
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "cluster.cli", "up", "--stdio", str(config)]
    )
    async with asyncio.timeout(180), mcp.Client(params, mode="legacy") as client:
        tools = await client.list_tools()
        assert "echo" in {t.name for t in tools.tools}
        result = await client.call_tool("echo", {"text": "over stdio"})
        assert result.structured_content == {"result": "over stdio"}


def test_a_non_loopback_bind_without_authentication_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text(CONFIG.format(port=0) + "  host: 0.0.0.0\n")
    result = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "up", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "refusing to bind 0.0.0.0" in result.stderr
