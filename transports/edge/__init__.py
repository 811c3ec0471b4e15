"""The offline / edge client: tool calls journaled on the device, sent when the link is up.

Imports no Ray and no MCP SDK: a device needs pydantic, ``httpx2`` and ``aiosqlite``.
"""

from transports.edge.client import EdgeCall, EdgeClient, EdgeSettings, LinkStatus, Outcome
from transports.edge.journal import JournalError, JournalFull
from transports.edge.pump import LinkState

__all__ = [
    "EdgeCall",
    "EdgeClient",
    "EdgeSettings",
    "JournalError",
    "JournalFull",
    "LinkState",
    "LinkStatus",
    "Outcome",
]
