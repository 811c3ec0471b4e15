"""The tools the conformance suite's task scenarios call (2026-07-28 tasks extension).

The suite (``@modelcontextprotocol/conformance``, scenarios ``tasks-*``) expects these
names and arguments; which of them run as tasks is the pool's configuration
(``tasks.tools``), as with any other server on the bus:

* ``greet{name}``: synchronous only;
* ``slow_compute{seconds, label}``: ``optional``; sleeps, and is cancellable;
* ``failing_job{}``: ``required``; a tool error (``isError``) after about a second;
* ``protocol_error_job{}``: ``optional``; ends with a JSON-RPC error (-32603);
* ``confirm_delete{filename}``: ``optional``; asks the caller to confirm (one
  elicitation in the middle of the task), then says what it did;
* ``multi_input{}``: ``optional``; asks two questions at once (two elicitations in
  parallel), then answers with both;
* ``test_tool_with_task{}``: ``required`` and ``input_first``: asks the user's name
  synchronously (an MRTR ``InputRequiredResult``), then, called again with the answer,
  runs as a task that greets them.

Their elicitations are ordinary SDK ``ctx.elicit`` calls: run as a task, the bus parks
them in the task store and the task shows ``input_required`` until ``tasks/update``
answers them (``actors.tasks.inputs``).
"""

from __future__ import annotations

import asyncio

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitRequest, ElicitRequestFormParams, ElicitResult, InputRequiredResult
from pydantic import BaseModel

__all__ = ["INPUT_FIRST", "TASK_TOOLS", "server"]

server = MCPServer("tasks-conformance")

# The pool configuration the scenarios need (``pools[].tasks.tools``).
TASK_TOOLS = {
    "slow_compute": "optional",
    "failing_job": "required",
    "protocol_error_job": "optional",
    "confirm_delete": "optional",
    "multi_input": "optional",
    "test_tool_with_task": "required",
}
# Tools that gather their input (MRTR) before they become tasks (``tasks.input_first``).
INPUT_FIRST = frozenset({"test_tool_with_task"})


class Confirmation(BaseModel):
    confirm: bool


class Name(BaseModel):
    name: str


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


@server.tool()
async def confirm_delete(filename: str, ctx: Context) -> str:
    """Delete ``filename`` once the user confirms (it deletes nothing: a fixture)."""
    answer = await ctx.elicit(f"Delete {filename}?", Confirmation)
    if answer.action == "accept" and answer.data.confirm:
        return f"deleted {filename}"
    return f"kept {filename} ({answer.action})"


@server.tool()
async def multi_input(ctx: Context) -> str:
    """Ask two names at once, then greet both."""
    first, second = await asyncio.gather(
        ctx.elicit("First name?", Name), ctx.elicit("Second name?", Name)
    )
    names = [a.data.name if a.action == "accept" else a.action for a in (first, second)]
    return f"Hello, {names[0]} and {names[1]}!"


@server.tool()
async def test_tool_with_task(ctx: Context) -> str | InputRequiredResult:
    """Ask the user's name (MRTR), then greet them: as a task, once the name is known."""
    answer = (ctx.input_responses or {}).get("user_name")
    if not isinstance(answer, ElicitResult):
        schema = {"type": "object", "properties": {"name": {"type": "string"}}}
        ask = ElicitRequestFormParams(message="What is your name?", requested_schema=schema)
        return InputRequiredResult(input_requests={"user_name": ElicitRequest(params=ask)})
    name = (answer.content or {}).get("name") if answer.action == "accept" else None
    await asyncio.sleep(1)  # the task's work
    return f"Hello, {name or 'stranger'}!"
