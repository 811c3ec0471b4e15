"""Plain Python functions served as MCP tools (``tools: "cluster.examples.functions"``).

Every public function defined here becomes a tool; its input schema comes from the type
hints and its description from the docstring.
"""

from __future__ import annotations

import math

__all__ = ["hypotenuse", "word_count"]


def hypotenuse(a: float, b: float) -> float:
    """The length of the hypotenuse of a right triangle with legs a and b."""
    return math.hypot(a, b)


def word_count(text: str) -> int:
    """How many whitespace-separated words the text has."""
    return len(text.split())


def _not_a_tool() -> None:
    """Private helpers are never exported."""
