"""The actors a bus's ``/metrics`` page is collected from (see :mod:`.endpoint`).

The router and the autoscaler by their names, the gateway replicas ``raybus up`` keeps,
or the gateway running in this process (``--stdio``). Each source is one
``metrics_snapshot`` actor call; a bus without an autoscaler (no pool autoscaled) simply
has no autoscaler source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cluster.metrics.endpoint import Source
from cluster.metrics.registry import FamilySnapshot, MetricsRegistry
from cluster.naming import HandleCache, actor_names
from cluster.ray_actors.gateway import GatewayReplicas
from transports.errors import ConnectionClosed

__all__ = ["bus_sources"]


def bus_sources(
    bus: str,
    *,
    replicas: GatewayReplicas | None = None,
    local: MetricsRegistry | None = None,
) -> Callable[[], dict[str, Source]]:
    """The sources of ``bus``'s page, read again at every scrape (replicas come and go)."""
    handles = HandleCache()

    def named(name: str, *, optional: bool) -> Source:
        async def ask() -> list[FamilySnapshot] | None:
            try:
                handle = await handles.get_async(name)
            except ConnectionClosed:
                if optional:
                    return None
                raise
            try:
                snapshot: list[FamilySnapshot] = await handle.metrics_snapshot.remote()
            except Exception:
                handles.forget(name)  # a bus started again under this name: look it up anew
                raise
            return snapshot

        return ask

    def replica(handle: Any) -> Source:
        async def ask() -> list[FamilySnapshot]:
            snapshot: list[FamilySnapshot] = await handle.metrics_snapshot.remote()
            return snapshot

        return ask

    async def here() -> list[FamilySnapshot]:
        assert local is not None
        return local.snapshot()

    router = named(actor_names.router(bus), optional=False)
    autoscaler = named(actor_names.autoscaler(bus), optional=True)

    def current() -> dict[str, Source]:
        sources = {"router": router, "autoscaler": autoscaler}
        if replicas is not None:
            for info, handle in replicas.handles():
                sources[f"gateway/{info.node_id[:8]}"] = replica(handle)
        if local is not None:
            sources["gateway"] = here
        return sources

    return current
