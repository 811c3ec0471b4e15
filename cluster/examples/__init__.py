"""Small MCP servers built on the official SDK, used by the demo, tests and notebooks."""
