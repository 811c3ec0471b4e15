"""A pool server for the region tests: every run leaves its key in the pool's own file.

Each pool names its file in ``env`` (``RAYBUS_TEST_RUNS``), so the file a call's key lands
in proves which pool ran it, whatever the caller asked. Modelled on
:mod:`tests.faults.fault_server`.
"""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

__all__ = ["server"]

server = MCPServer("regional")


@server.tool()
async def append(key: str) -> str:
    """Append ``key`` to this pool's file (one line per run)."""
    with open(os.environ["RAYBUS_TEST_RUNS"], "a", encoding="utf-8") as runs:  # noqa: ASYNC230
        runs.write(key + "\n")
    return key


@server.tool()
async def crash(key: str) -> str:
    """End the worker's process: a pool fault, counted by the pool's breaker."""
    os._exit(23)
