"""An unmodified official-SDK MCP server: a calculator with a resource and a prompt.

Run it on stdio with ``python -m cluster.examples.calculator``; import ``server`` to host
it in a worker.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer("calculator")


@server.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@server.tool()
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


@server.resource("calc://constants/pi")
def pi() -> str:
    """The constant pi, to 15 places."""
    return "3.141592653589793"


@server.prompt()
def explain(expression: str) -> str:
    """Ask for a step-by-step explanation of an arithmetic expression."""
    return f"Explain step by step how to evaluate: {expression}"


if __name__ == "__main__":
    server.run()
