"""The gateway as Ray actors: one replica per node serves MCP over HTTP and WebSocket.

Each :class:`GatewayReplica` runs uvicorn on its own event loop, with a
:class:`~cluster.client.BusClient` whose answers workers deliver straight to the replica
(``deliver``), so a call's answer makes no extra hop through a mailbox actor. As Ray
Serve runs one HTTP proxy per node, :class:`GatewayReplicas` (driven by ``raybus up``)
keeps one replica on every alive node, so ingress grows with the cluster; a replica that
dies, or a node that joins, is noticed at the next check and served again.

Every replica binds the configured host and port on its node; replicas sharing one IP
address (several Ray nodes on one machine) take a free port after the first. Each
replica counts its refusals in its own metrics registry, exported to Ray every second
and handed whole to ``raybus up --metrics-port`` (``metrics_snapshot``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.thread_root import pin_thread_pool_root
from cluster.client import BusClient
from cluster.config import BusConfig
from cluster.gateway.listener import QuietServer, bind_listener
from cluster.metrics.ray_export import RayExport, export_forever
from cluster.metrics.registry import FamilySnapshot, MetricsRegistry
from cluster.naming import NAMESPACE, actor_names
from cluster.telemetry import install_tracing
from transports.frame import Frame

if TYPE_CHECKING:
    from cluster.gateway.server import Gateway

__all__ = ["GatewayReplica", "GatewayReplicas", "ReplicaInfo"]

logger = logging.getLogger(__name__)

# A cold replica imports the SDK and uvicorn and connects its client: generous on 2 cores.
_START_TIMEOUT_S = 120.0
_STOP_TIMEOUT_S = 30.0
_PING_TIMEOUT_S = 10.0


@ray.remote(num_cpus=0)
class GatewayReplica:
    """One gateway on one node. ``start`` serves; ``stop`` drains and closes."""

    def __init__(self, config: BusConfig, actor_name: str) -> None:
        self._config = config
        self._actor_name = actor_name
        self._client: BusClient | None = None
        self._gateway: Gateway | None = None
        self._server: QuietServer | None = None
        self._serving: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._metrics = MetricsRegistry(config.name)
        self._exporter: asyncio.Task[None] | None = None
        self._url: str | None = None
        self._thread_root: asyncio.Task[None] | None = None  # see actors.thread_root

    def prepare(self) -> None:
        """Import what serving needs (the SDK, uvicorn: most of a second of CPU).

        Sent as the replica is created, so the imports overlap the bus's start instead
        of following it; ``start`` imports whatever this did not.
        """
        import cluster.gateway.app
        import cluster.gateway.server
        import cluster.tasks.remote  # noqa: F401

    async def start(self, port: int) -> int:
        """Serve on ``port`` (0: any free one); returns the port bound.

        Raises:
            GatewayBindError: the port cannot be bound on this node.
        """
        # Imported here, not at the top: the driver imports this module to spawn the
        # replicas and should not load the MCP SDK for it (a second on two cores).
        from cluster.gateway.app import http_server
        from cluster.gateway.server import Gateway
        from cluster.tasks.remote import gateway_tasks_for

        install_tracing("gateway")
        self._thread_root = await pin_thread_pool_root()  # anyio's threads reused (see there)
        config = self._config
        sock = bind_listener(config.gateway.host, port)
        chosen = int(sock.getsockname()[1])
        settings = config.gateway
        self._url = settings.url(chosen)
        self._client = await BusClient.connect(config.name, inbox=self._actor_name)
        self._gateway = Gateway(
            self._client,
            name=f"raybus-{config.name}",
            call_timeout_s=config.gateway.call_timeout_s,
            policy=config.gateway.policy,
            metrics=self._metrics,
            tasks=gateway_tasks_for(config),
            idempotency_ttl_s=config.idempotency.ttl_s,
        )
        loop = asyncio.get_running_loop()
        self._watcher = loop.create_task(self._gateway.watch_list_changes())
        self._exporter = loop.create_task(export_forever(RayExport(self._metrics)))
        self._server = http_server(self._gateway, config, chosen)
        self._serving = serving = loop.create_task(self._serve(self._server, sock))
        async with asyncio.timeout(_START_TIMEOUT_S):
            while not self._server.started:
                if serving.done():
                    serving.result()  # raises why it stopped
                    raise RuntimeError("the gateway stopped while starting")
                await asyncio.sleep(0.02)
        return chosen

    @staticmethod
    async def _serve(server: QuietServer, sock: socket.socket) -> None:
        with sock:
            await server.serve(sockets=[sock])

    async def deliver(self, frames: list[Frame]) -> None:
        """Answers, notifications and server requests for this replica's calls."""
        if self._client is not None:
            await self._client.deliver(frames)

    def url(self) -> str | None:
        """Where this replica serves MCP (None until it has started)."""
        return self._url

    def ping(self) -> str:
        return "pong"

    async def metrics_snapshot(self) -> list[FamilySnapshot]:
        """This replica's refusal counts (for ``raybus up --metrics-port``).

        Async, so it runs on the event loop that records them, never beside it.
        """
        return self._metrics.snapshot()

    async def stop(self) -> None:
        """Stop serving, write the audit records still queued, close the client."""
        if self._server is not None:
            self._server.should_exit = True
        if self._serving is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_STOP_TIMEOUT_S):
                    await self._serving
            self._serving.cancel()
        for task in (self._watcher, self._exporter):
            if task is not None:
                task.cancel()
        if self._gateway is not None:
            await self._gateway.aclose()
        if self._client is not None:
            await self._client.close()


@dataclass(frozen=True)
class ReplicaInfo:
    node_id: str
    node_ip: str
    port: int
    actor_name: str


class GatewayReplicas:
    """Keeps one :class:`GatewayReplica` on every alive node (driver side).

    Args:
        config: the bus.
        port: the port every replica binds (0: any free one).
    """

    def __init__(self, config: BusConfig, port: int) -> None:
        self._config = config
        self._port = port
        self._replicas: dict[str, tuple[ReplicaInfo, Any]] = {}  # by node id
        self._spawned: dict[str, tuple[str, Any]] = {}  # by node id: (name, handle) not started

    @property
    def replicas(self) -> list[ReplicaInfo]:
        return [info for info, _ in self._replicas.values()]

    def handles(self) -> list[tuple[ReplicaInfo, Any]]:
        """Each replica with its actor handle."""
        return list(self._replicas.values())

    def url(self, info: ReplicaInfo) -> str:
        settings = self._config.gateway
        return settings.url(info.port)

    async def reconcile(self) -> list[ReplicaInfo]:
        """Start a replica on every alive node that lacks a live one; returns the new ones.

        Raises:
            GatewayBindError: a replica could not bind its port (the first start only
                reports it; later checks log it and try again).
        """
        nodes = ray.nodes()  # type: ignore[no-untyped-call]
        alive = {n["NodeID"]: n["NodeManagerAddress"] for n in nodes if n["Alive"]}
        for node_id in [n for n in self._replicas if n not in alive]:
            del self._replicas[node_id]  # its node is gone, and the replica with it
        for node_id, (_, handle) in list(self._replicas.items()):
            if not await _answers(handle):
                logger.warning("gateway replica on node %s stopped: starting another", node_id)
                ray.kill(handle)  # gone for sure before another binds its port
                del self._replicas[node_id]
        started = []
        for node_id, node_ip in alive.items():
            if node_id not in self._replicas:
                started.append(await self._start_on(node_id, node_ip))
        return started

    def spawn(self) -> None:
        """Create a replica actor on every alive node without serving yet.

        Called while the bus starts: a replica's process start and imports (the SDK,
        uvicorn) then overlap the bus's own start instead of following it.
        """
        nodes = ray.nodes()  # type: ignore[no-untyped-call]
        for node in nodes:
            if node["Alive"] and node["NodeID"] not in self._spawned:
                _, handle = self._spawned[node["NodeID"]] = self._create(node["NodeID"])
                handle.prepare.remote()  # its result is not needed: start follows it

    def _create(self, node_id: str) -> tuple[str, Any]:
        name = actor_names.gateway(self._config.name, node_id)
        handle = GatewayReplica.options(  # type: ignore[attr-defined]
            name=name,
            namespace=NAMESPACE,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(self._config, name)
        return name, handle

    async def _start_on(self, node_id: str, node_ip: str) -> ReplicaInfo:
        taken = {info.port for info in self.replicas if info.node_ip == node_ip}
        port = 0 if self._port in taken else self._port  # one IP, several Ray nodes
        spawned = self._spawned.pop(node_id, None)
        name, handle = spawned if spawned is not None else self._create(node_id)
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                bound_port: int = await handle.start.remote(port)
        except BaseException:
            ray.kill(handle)
            raise
        info = ReplicaInfo(node_id, node_ip, bound_port, name)
        self._replicas[node_id] = (info, handle)
        return info

    async def keep(self, interval_s: float = 2.0) -> None:
        """Reconcile every ``interval_s`` until cancelled (nodes join, replicas die)."""
        while True:
            await asyncio.sleep(interval_s)  # the checking period
            try:
                for info in await self.reconcile():
                    logger.warning("gateway replica started: %s", self.url(info))
            except Exception:  # the keeper must outlive one failed check
                logger.exception("keeping the gateway replicas failed")

    async def stop(self) -> None:
        """Stop every replica (each writes its audit records), then end them."""
        handles = [handle for _, handle in self._replicas.values()]
        self._replicas.clear()
        for _, spawned in self._spawned.values():
            ray.kill(spawned)  # never started: nothing to drain
        self._spawned.clear()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_STOP_TIMEOUT_S):
                await asyncio.gather(*(h.stop.remote() for h in handles), return_exceptions=True)
        for handle in handles:
            ray.kill(handle)


async def _answers(handle: Any) -> bool:
    try:
        async with asyncio.timeout(_PING_TIMEOUT_S):
            await handle.ping.remote()
    except (RayError, TimeoutError):  # died, or too stuck to answer: replaced
        return False
    return True
