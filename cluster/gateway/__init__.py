"""The gateway: standard MCP clients in (Streamable HTTP, stdio, WebSocket), the bus behind."""
