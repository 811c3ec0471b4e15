"""The worker's logic: the core, the hosted MCP server session and links to servers."""
