"""The tools the conformance suite's task scenarios call (2026-07-28 tasks extension).

The suite (``@modelcontextprotocol/conformance``, scenarios ``tasks-*``) expects these
names and arguments; which of them run as tasks is the pool's configuration
(``tasks.tools``), as with any other server on the bus:

* ``greet{name}``: synchronous only;
* ``slow_compute{seconds, label}``: ``optional``; sleeps, and is cancellable;
* ``failing_job{}``: ``required``; a tool error (``isError``) after about a second;
* ``protocol_error_job{}``: ``optional``; ends with a JSON-RPC error (-32603).

The scenarios' input-request tools (``confirm_delete``, ``multi_input``,
``test_tool_with_task``) are not here: the task store does not relay a task's input
requests yet.
"""

from __future__ import annotations

import asyncio

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError

__all__ = ["TASK_TOOLS", "server"]

server = MCPServer("tasks-conformance")

# The pool configuration the scenarios need (``pools[].tasks.tools``).
TASK_TOOLS = {
    "slow_compute": "optional",
    "failing_job": "required",
    "protocol_error_job": "optional",
}


@server.tool()
def greet(name: str) -> str:
    """Greet someone at once."""
    return f"Hello, {name}!"


@server.tool()
async def slow_compute(seconds: float, label: str = "") -> str:
    """Sleep ``seconds`` (the computation), then say so."""
    await asyncio.sleep(seconds)  # the work itself
    return f"computed {label or 'result'} in {seconds:g} s"


@server.tool()
async def failing_job() -> str:
    """Fail as a tool (``isError``) after about a second."""
    await asyncio.sleep(1)  # the work that fails
    raise ToolError("the job failed")


@server.tool()
async def protocol_error_job() -> str:
    """End with a JSON-RPC error rather than a tool error."""
    raise MCPError(-32603, "the job broke the protocol")
