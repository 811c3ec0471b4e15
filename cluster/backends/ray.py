"""Ray between clients and workers (``backend: ray``, the default).

* A client submits batches of requests to the router actor, which queues them per pool
  and delivers them to workers; answers come back to the client's own
  :class:`~cluster.ray_actors.endpoint.ClientEndpoint`, which the client long-polls -
  or, for a client living in an actor (a gateway replica), straight to that actor.
* Workers take nothing themselves (the router delivers) and beat to the discovery actor
  directly, which can ask them for their catalog.
* The autoscaler's lag is the router's: queued calls, oldest queued age, calls in flight.

Every call is delivered once, so unkeyed calls need no idempotency ledger; calls with an
idempotency key use the bus's ledger, started by the first of them (:mod:`cluster.idempotency`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Generator
from typing import TYPE_CHECKING, Any

import ray

from cluster.backends.base import (
    ClientLink,
    HeartbeatFeed,
    LagRows,
    OnFrame,
    WorkerLink,
)
from cluster.backends.lane_queue import HeldEnd, HeldRows
from cluster.backends.ray_direct import DirectLane
from cluster.naming import NAMESPACE, HandleCache, actor_names
from cluster.ray_actors.endpoint import ClientEndpoint
from transports.envelope import CorrelationKey
from transports.errors import BusError
from transports.frame import Frame

if TYPE_CHECKING:
    from actors.discovery.registry import Heartbeat
    from actors.worker.hosted_server import HostedServer
    from cluster.config import BusConfig, PoolConfig

__all__ = [
    "DURABLE_NEEDS_BROKER",
    "DiscoveryActorHeartbeats",
    "RayBackend",
    "RayClientLink",
    "RayInboxLink",
    "RouterSubmissions",
    "RouterTook",
    "dispatch",
]

logger = logging.getLogger(__name__)

_POLL_WAIT_S = 1.0
# Ray keeps no answer for a caller that is gone: a task (the task store) does.
DURABLE_NEEDS_BROKER = (
    "durable_id: durable clients need the kafka or sqs backend (this bus runs on ray); "
    "on Ray, start_tool runs a call as a task whose result outlives its caller"
)


async def dispatch(frames: list[Frame], on_frame: OnFrame) -> None:
    """Hand a batch of answers to the client, one at a time, in order."""
    for frame in frames:
        try:
            await on_frame(frame)
        except BusError as exc:
            logger.warning("dropped an undecodable frame: %s", exc)


class RouterTook:
    """A batch's submission to the router: awaited, the router's incarnation; ``frames``
    are the calls the router took (the batch's others went to workers directly or wait
    in the lane, and a router restart does not concern them)."""

    def __init__(self, submitted: Any, frames: list[Frame]) -> None:
        self._submitted = submitted
        self.frames = frames

    def __await__(self) -> Generator[Any, None, object]:
        result: object = yield from self._submitted.__await__()
        return result


class RouterSubmissions:
    def __init__(self, router: Any, reply_to: str) -> None:
        self._router = router
        self._reply_to = reply_to
        self.direct: DirectLane | None = None  # see cluster.backends.ray_direct
        # Told of each batch sent to the router later (calls a worker bounced): the client
        # notes the router incarnation that took them, as for batches it submitted.
        self.on_rerouted: Callable[[list[Frame], Any], None] | None = None

    @property
    def reply_to(self) -> str:
        return self._reply_to

    def submit(self, frames: list[Frame]) -> Any:
        if self.direct is not None:
            frames = self.direct.take(frames)
            if not frames:
                return None
        return RouterTook(self._router.submit.remote(frames), frames)

    def router_incarnation(self) -> Any:
        """The router's incarnation (an awaitable): see ClientConnection._watch_router."""
        return self._router.incarnation.remote()

    def to_router(self, frames: list[Frame]) -> None:
        """Calls a worker bounced, or that are safe to repeat after one was lost."""
        submitted = self._router.submit.remote(frames)
        if self.on_rerouted is not None:
            self.on_rerouted(frames, submitted)

    def report_held(self, rows: HeldRows, ended: list[HeldEnd]) -> None:
        """What the direct lane holds for pools' slots: the router counts it as lag."""
        self._router.lane_held.remote(self._reply_to, rows, ended)

    def cancel(self, keys: list[CorrelationKey]) -> None:
        if self.direct is not None:
            keys = self.direct.cancel(keys)
        if keys:
            self._router.cancel.remote(keys)

    async def _close_direct(self) -> None:
        if self.direct is not None:
            await self.direct.close()


class RayInboxLink(RouterSubmissions):
    """For a client inside an actor: workers deliver answers to that actor directly.

    The actor's ``deliver`` hands each batch to the client, so ``receive`` has nothing to
    fetch: it only keeps the link open until closed.
    """

    def __init__(self, router: Any, actor_name: str) -> None:
        super().__init__(router, actor_name)
        self._closed = asyncio.Event()

    async def receive(self) -> None:
        await self._closed.wait()

    async def close(self) -> None:
        self._closed.set()
        await self._close_direct()


class RayClientLink(RouterSubmissions):
    """Requests to the router in batches; answers long-polled from the client's endpoint."""

    def __init__(self, router: Any, endpoint: Any, endpoint_name: str, on_frame: OnFrame) -> None:
        super().__init__(router, endpoint_name)
        self._endpoint = endpoint
        self._on_frame = on_frame

    async def receive(self) -> None:
        while True:
            try:
                frames: list[Frame] = await self._endpoint.take.remote(100_000, _POLL_WAIT_S)
            except asyncio.CancelledError:
                raise
            except Exception:  # the poll loop is the client's top level: log, keep going
                logger.exception("polling the client endpoint failed")
                await asyncio.sleep(_POLL_WAIT_S)  # back off instead of spinning
                continue
            await dispatch(frames, self._on_frame)

    async def close(self) -> None:
        await self._close_direct()
        ray.kill(self._endpoint)


class DiscoveryActorHeartbeats:
    """Beats as calls to the discovery actor, which answers whether it needs the catalog."""

    answers = True

    def __init__(self, bus: str, handles: HandleCache) -> None:
        self._name = actor_names.discovery(bus)
        self._handles = handles

    async def send(self, beat: Heartbeat) -> bool:
        try:
            discovery = await self._handles.get_async(self._name)
            need: bool = await discovery.heartbeat.remote(beat)
        except Exception:
            self._handles.forget(self._name)  # a restarted discovery has a new handle
            raise
        return need


class RayBackend:
    def __init__(self, config: BusConfig) -> None:
        self._config = config

    @property
    def ledger_ttl_s(self) -> float | None:
        return None

    @property
    def max_consumers(self) -> int | None:
        return None

    @property
    def calls_bypass_router(self) -> bool:
        return False  # the router routes every call, and counts it

    async def settle(self) -> BusConfig:
        return self._config

    async def open_client(
        self,
        client_name: str,
        router: Any,
        discovery: Any,
        on_frame: OnFrame,
        *,
        inbox: bool = False,
        durable: bool = False,
    ) -> ClientLink:
        if durable:
            raise ValueError(DURABLE_NEEDS_BROKER)
        link: RayInboxLink | RayClientLink
        if inbox:
            link = RayInboxLink(router, client_name)
        else:
            # A driver cannot receive actor calls: its answers wait in an actor it polls.
            endpoint = ClientEndpoint.options(  # type: ignore[attr-defined]
                name=client_name, namespace=NAMESPACE, num_cpus=0
            ).remote()
            link = RayClientLink(router, endpoint, client_name, on_frame)
        router_config = self._config.router
        if router_config.direct_calls and router_config.regions is None:
            # dispatch is looked up at each hand-over, as the links' receive loops do.
            link.direct = DirectLane(
                discovery,
                lambda frames: dispatch(frames, on_frame),
                link.to_router,
                grace_s=router_config.overdue_grace_s,
                report_held=link.report_held,
                max_held_per_pool=router_config.max_pending_per_pool,
            )
        return link

    async def open_worker(
        self,
        pool: PoolConfig,
        hosted: HostedServer,
        *,
        server_id: str,
        capacity: int,
        handles: HandleCache,
    ) -> WorkerLink:
        return WorkerLink(None, DiscoveryActorHeartbeats(self._config.name, handles))

    async def heartbeat_feed(self, on_beat: Callable[[Heartbeat], None]) -> HeartbeatFeed | None:
        return None  # beats arrive as calls to the discovery actor

    async def lag(self, handles: HandleCache, pools: Collection[str]) -> LagRows:
        router = await handles.get_async(actor_names.router(self._config.name))
        rows: LagRows = await router.lag.remote()
        return rows

    async def close(self) -> None:
        return None  # the router is read through an actor handle: nothing kept open
