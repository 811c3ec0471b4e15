"""Where a pool's workers can run: the cluster's nodes, their labels and free resources.

One :class:`ClusterReading` is a snapshot (two GCS calls, made off the event loop by the
caller): each alive node's labels, total and free resources. From it, a pool's *usable*
nodes are those whose labels match its ``label_selector`` (Ray's own matcher), and its
room is how many more of its workers those nodes can run now
(:func:`actors.capacity.room_for`). The autoscaler reads one per round and shares it
out among pools; the supervisor asks one before starting a warm spare; the bus's start
asks one whether any node could ever host a pool's worker, to say so at once instead of
waiting silently (Ray keeps such an actor pending: an autoscaling cluster may add the
node).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray

from actors.capacity import FreeByNode, describe_shortage, format_amounts, reserve, room_for
from cluster.config import PoolConfig

__all__ = ["ClusterReading", "read_cluster"]


@dataclass(frozen=True)
class ClusterReading:
    """Alive nodes: labels, total and free resources, by node id (hex)."""

    labels: Mapping[str, Mapping[str, str]]
    total: Mapping[str, Mapping[str, float]]
    free: FreeByNode

    def usable(self, pool: PoolConfig) -> list[str]:
        """The alive nodes whose labels satisfy the pool's label selector."""
        selector = pool.label_selector
        if not selector:
            return list(self.labels)
        from ray._raylet import (  # type: ignore[attr-defined]  # the scheduler's own matcher
            node_labels_match_selector,
        )

        return [
            node
            for node, labels in self.labels.items()
            if node_labels_match_selector(dict(labels), dict(selector))
        ]

    def room(self, pool: PoolConfig) -> tuple[int, str]:
        """How many more workers of ``pool`` fit now, and what limits that."""
        nodes = self.usable(pool)
        shape = pool.worker_resources
        if not nodes:
            return 0, f"no alive node has labels {_selector_text(pool)}"
        if not shape:  # only labels limit this pool: any usable node runs any number
            return pool.max_workers, ""
        free = {node: self.free.get(node, {}) for node in nodes}
        holder = f"nodes with {_selector_text(pool)} have" if pool.label_selector else None
        note = describe_shortage(free, shape, holder=holder or "the cluster has")
        return room_for(free, shape), note

    def after_placing(self, pool: PoolConfig, count: int) -> ClusterReading:
        """This reading with ``count`` more workers of ``pool`` placed on its usable nodes."""
        shape = pool.worker_resources
        if count <= 0 or not shape:
            return self
        nodes = self.usable(pool)
        placed = reserve({node: self.free.get(node, {}) for node in nodes}, shape, count)
        return ClusterReading(self.labels, self.total, {**self.free, **placed})

    def never_fits(self, pool: PoolConfig) -> str | None:
        """Why no alive node could host a worker of ``pool`` even when idle (None: one can)."""
        nodes = self.usable(pool)
        if not nodes:
            return f"no alive node has labels {_selector_text(pool)}"
        shape = pool.worker_resources
        if not shape or room_for({n: self.total.get(n, {}) for n in nodes}, shape) > 0:
            return None
        where = f" with labels {_selector_text(pool)}" if pool.label_selector else ""
        return f"no alive node{where} has {format_amounts(shape)} in all (a worker's reservation)"


def _selector_text(pool: PoolConfig) -> str:
    return ", ".join(f"{key}={value}" for key, value in pool.label_selector.items())


def read_cluster() -> ClusterReading:
    """A snapshot of the alive nodes (blocking: call it in a thread from async code)."""
    from ray._private.state import available_resources_per_node

    known: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    nodes = [n for n in known if n.get("Alive")]
    free: dict[str, dict[str, float]]
    free = available_resources_per_node()  # type: ignore[no-untyped-call]
    alive = {n["NodeID"] for n in nodes}
    return ClusterReading(
        labels={n["NodeID"]: dict(n.get("Labels") or {}) for n in nodes},
        total={n["NodeID"]: dict(n.get("Resources") or {}) for n in nodes},
        free={node: dict(resources) for node, resources in free.items() if node in alive},
    )
