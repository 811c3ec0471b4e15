"""A review-scoring MCP server: the tool of the batch scoring example and its tests.

``score(text)`` rates a review by its words, from -1 (all negative) to 1 (all positive).
It is read-only (``readOnlyHint``), so a batch job may repeat a call whose outcome was
lost; an empty review is refused with a tool error, the bad row of the example.
Host it by import path (``cluster.examples.scoring:server``).
"""

from __future__ import annotations

import re

import mcp_types as types
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

__all__ = ["server"]

server = MCPServer("scoring")

_POSITIVE = frozenset(
    ["good", "great", "excellent", "love", "loved", "fine", "happy", "best", "superb", "nice"]
)
_NEGATIVE = frozenset(
    ["bad", "poor", "awful", "hate", "hated", "broken", "sad", "worst", "terrible", "boring"]
)
_WORD = re.compile(r"[a-z']+")


@server.tool(annotations=types.ToolAnnotations(read_only_hint=True))
def score(text: str) -> dict[str, float | int]:
    """Sentiment of a review: (positive - negative words) / scored words, and its length."""
    words = _WORD.findall(text.lower())
    if not words:
        raise ToolError("the review has no words")
    positive = sum(w in _POSITIVE for w in words)
    negative = sum(w in _NEGATIVE for w in words)
    scored = positive + negative
    return {"score": (positive - negative) / scored if scored else 0.0, "words": len(words)}
