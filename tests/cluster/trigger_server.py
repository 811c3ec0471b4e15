"""A pool server for the trigger tests (``tests.cluster.trigger_server:server``).

``work`` appends its ``token`` to a file (one line per run, so a test counts executions)
and, given a ``gate`` path, waits until that file exists: the test holds calls in flight
for as long as it needs to observe backpressure, then releases them all at once.
"""

from __future__ import annotations

import asyncio
import os

from mcp.server.mcpserver import MCPServer

__all__ = ["server"]

server = MCPServer("triggers")

_GATE_POLL_S = 0.05
_GATE_TIMEOUT_S = 300.0  # a test that never opens its gate fails on its own bound first


@server.tool()
async def work(token: str, path: str, gate: str = "") -> dict[str, str]:
    """Record one run of ``token`` in ``path``; then wait for ``gate`` to exist."""
    with open(path, "a", encoding="utf-8") as runs:  # noqa: ASYNC230 - one short line
        runs.write(token + "\n")
    if gate:
        async with asyncio.timeout(_GATE_TIMEOUT_S):
            while not os.path.exists(gate):  # noqa: ASYNC110, ASYNC240 - a stat of a test file
                await asyncio.sleep(_GATE_POLL_S)
    return {"token": token}
