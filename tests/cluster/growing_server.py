"""A pool server whose tool list grows at run time, for tests of name clashes.

``grow(name)`` adds a tool ``name`` that answers ``"from the growing server"`` and tells
the bus its tool list changed, as a server whose tools depend on outside state would.
Name it as a pool's ``server:`` (``tests.cluster.growing_server:server``).
"""

from __future__ import annotations

from mcp.server.mcpserver import Context, MCPServer

__all__ = ["ANSWER", "server"]

ANSWER = "from the growing server"

server = MCPServer("growing")


def _added() -> str:
    return ANSWER


@server.tool()
async def grow(name: str, ctx: Context) -> str:
    """Add a tool called ``name`` and announce the changed list."""
    server.add_tool(_added, name=name)
    await ctx.session.send_tool_list_changed()
    return f"added {name}"
