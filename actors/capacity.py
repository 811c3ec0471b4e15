"""How many more workers of a pool fit on the cluster's free resources.

A worker reserves a *shape*: an amount of each Ray resource (``CPU``, ``GPU``,
``memory`` in bytes, or a custom one such as ``accel``). Ray places an actor on one
node, so what counts is each node's free resources, not the cluster's sum: two nodes
with 0.5 free CPU each run no worker of 1 CPU. The number that fits is therefore::

    room = sum over nodes of min over the shape's resources of floor(free / need)

Only nodes the pool may use are passed in (the caller filters them by the pool's label
selector). Pools that reserve nothing have no room limit; :func:`room_for` is only
asked about shapes with at least one positive amount.

When several pools share one reading, :func:`reserve` takes what a pool's new workers
will use out of it (the fullest-fitting node first), so the next pool sees the rest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["FreeByNode", "describe_shortage", "format_amounts", "reserve", "room_for"]

# Ray reports free amounts as floats at 0.0001 granularity: 0.9999999 free is 1.
_EPSILON = 1e-6

FreeByNode = Mapping[str, Mapping[str, float]]
"""Node id -> resource name -> free amount."""


def _fits_on(free: Mapping[str, float], shape: Mapping[str, float]) -> int:
    counts = [
        math.floor(free.get(name, 0.0) / need + _EPSILON)
        for name, need in shape.items()
        if need > 0
    ]
    return max(0, min(counts)) if counts else 0


def room_for(free_by_node: FreeByNode, shape: Mapping[str, float]) -> int:
    """How many more workers of ``shape`` the nodes' free resources can run at once.

    Raises:
        ValueError: ``shape`` reserves nothing (such a pool has no room limit).
    """
    if not any(need > 0 for need in shape.values()):
        raise ValueError("a shape that reserves nothing has no room limit")
    return sum(_fits_on(free, shape) for free in free_by_node.values())


def reserve(
    free_by_node: FreeByNode, shape: Mapping[str, float], count: int
) -> dict[str, dict[str, float]]:
    """The nodes' free resources after ``count`` more workers of ``shape`` are placed.

    Workers go to the node with the most room first. Workers that fit nowhere take
    nothing (they would wait unscheduled).
    """
    left = {node: dict(free) for node, free in free_by_node.items()}
    for _ in range(max(0, count)):
        best = max(left, key=lambda node: _fits_on(left[node], shape), default=None)
        if best is None or _fits_on(left[best], shape) == 0:
            break
        for name, need in shape.items():
            left[best][name] = left[best].get(name, 0.0) - need
    return left


def describe_shortage(
    free_by_node: FreeByNode, shape: Mapping[str, float], *, holder: str = "the cluster has"
) -> str:
    """What the nodes have free of what a worker needs, for a decision's reason.

    ``the cluster has 1 CPU(s) free for workers of 2 CPU(s)``, with the free amounts
    summed over the nodes (a worker still needs them on one node); ``holder`` names the
    nodes (``nodes with zone=a have``).
    """
    needed = {name: need for name, need in shape.items() if need > 0}
    free = {name: sum(f.get(name, 0.0) for f in free_by_node.values()) for name in needed}
    return f"{holder} {format_amounts(free)} free for workers of {format_amounts(needed)}"


def format_amounts(amounts: Mapping[str, float]) -> str:
    """``1 CPU(s), 0.5 GPU(s), 2 GiB memory, 1 accel``: resources as a person reads them."""
    parts = []
    for name, amount in amounts.items():
        if name == "CPU":
            parts.append(f"{amount:g} CPU(s)")
        elif name == "GPU":
            parts.append(f"{amount:g} GPU(s)")
        elif name == "memory":
            parts.append(f"{amount / 2**30:.3g} GiB memory")
        else:
            parts.append(f"{amount:g} {name}")
    return ", ".join(parts) if parts else "nothing"
