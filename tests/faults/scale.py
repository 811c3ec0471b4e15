"""How big a fault test runs: CI-sized by default, longer with ``RAYBUS_FAULT_SCALE=soak``."""

from __future__ import annotations

import os

__all__ = ["scaled"]


def scaled(ci: int, soak: int) -> int:
    """``soak`` when ``RAYBUS_FAULT_SCALE=soak`` is set, else ``ci``."""
    return soak if os.environ.get("RAYBUS_FAULT_SCALE", "").strip().lower() == "soak" else ci
