"""The actors a bus's ``/metrics`` page is collected from (see :mod:`.endpoint`).

The router, the supervisor and the autoscaler by their names, the gateway replicas
``raybus up`` keeps, or the gateway running in this process (``--stdio``); on a backend
whose calls bypass the router (Kafka, SQS) also every live worker, found through
discovery at each scrape (workers come and go), since each counts the calls it ran.
Each source is one ``metrics_snapshot`` actor call; a bus without an autoscaler (no pool
autoscaled) simply has no autoscaler source. Each trigger replica is a source too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from cluster.backends.base import backend_for
from cluster.config import BusConfig
from cluster.metrics.endpoint import Source
from cluster.metrics.registry import FamilySnapshot, MetricsRegistry
from cluster.naming import HandleCache, actor_names
from cluster.ray_actors.gateway import GatewayReplicas
from transports.errors import ConnectionClosed

__all__ = ["bus_sources"]


def bus_sources(
    config: BusConfig,
    *,
    replicas: GatewayReplicas | None = None,
    local: MetricsRegistry | None = None,
) -> Callable[[], Awaitable[dict[str, Source]]]:
    """The sources of ``config``'s bus's page, found again at every scrape."""
    bus = config.name
    workers = backend_for(config).calls_bypass_router
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
                snapshot: list[FamilySnapshot] | None = await handle.metrics_snapshot.remote()
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

    def failing(error: Exception) -> Source:
        async def ask() -> list[FamilySnapshot]:
            raise error

        return ask

    async def here() -> list[FamilySnapshot]:
        assert local is not None
        return local.snapshot()

    fixed = {
        "router": named(actor_names.router(bus), optional=False),
        "supervisor": named(actor_names.supervisor(bus), optional=False),
        "autoscaler": named(actor_names.autoscaler(bus), optional=True),
    }

    async def live_workers() -> dict[str, Source]:
        """Each live worker (a worker drained meanwhile is absent, not down); if discovery
        does not answer, one ``workers`` source that fails, so the page says so."""
        try:
            discovery = await handles.get_async(actor_names.discovery(bus))
            infos = await discovery.workers.remote()
        except Exception as exc:  # noqa: BLE001 - reported as the source being down
            return {"workers": failing(exc)}
        return {f"worker/{info.server_id}": named(info.actor_name, optional=True) for info in infos}

    # Each trigger replica counts its own records (absent while it is not started).
    fixed.update(
        {
            f"trigger/{trigger.name}/{replica}": named(
                actor_names.trigger(bus, trigger.name, replica), optional=True
            )
            for trigger in config.triggers
            for replica in range(trigger.replicas)
        }
    )

    async def current() -> dict[str, Source]:
        sources = dict(fixed)
        if workers:
            sources.update(await live_workers())
        if replicas is not None:
            for info, handle in replicas.handles():
                sources[f"gateway/{info.node_id[:8]}"] = replica(handle)
        if local is not None:
            sources["gateway"] = here
        return sources

    return current
