"""How big a fault test's load is: a CI-sized default, or a soak run's.

``RAYBUS_FAULT_SCALE=soak`` picks the soak figure (longer, heavier runs by hand); any
other value, or none, the CI one.
"""

from __future__ import annotations

import os

__all__ = ["scaled"]


def scaled(ci: int, soak: int) -> int:
    """``soak`` when ``RAYBUS_FAULT_SCALE=soak``, else ``ci``."""
    return soak if os.environ.get("RAYBUS_FAULT_SCALE") == "soak" else ci
