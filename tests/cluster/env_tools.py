"""A tool module for tests: what the hosted server sees of its environment."""

from __future__ import annotations

import os


def environment_variable(name: str) -> str:
    """The value of ``name`` in the server's environment ("" when unset)."""
    return os.environ.get(name, "")
