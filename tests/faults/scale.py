"""How big a fault test's load is: CI-sized by default, longer with RAYBUS_FAULT_SCALE=soak."""

from __future__ import annotations

import os

__all__ = ["scaled"]


def scaled(ci: int, soak: int) -> int:
    """``soak`` when the environment asks for a soak run (``RAYBUS_FAULT_SCALE=soak``),
    else ``ci``."""
    return soak if os.environ.get("RAYBUS_FAULT_SCALE") == "soak" else ci
