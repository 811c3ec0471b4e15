"""What Kafka and SQS share on the client side and in the autoscaler's lag signal.

A broker client routes each request itself (the same :func:`~actors.router.routing.pool_for`
the router uses, over discovery's membership) and sends it to its pool's topic or queue;
answers come from the client's own topic or queue. Each backend supplies only its
:class:`BrokerWire`: addresses, sending, and the next delivery.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol

from actors.discovery.registry import Membership
from actors.replies import error_reply
from actors.router.routing import pool_for
from actors.worker.hosted_server import HostedServer
from cluster.backends.base import ClientLink, LagRows, OnFrame, WorkerLink
from cluster.config import BusConfig, PoolConfig
from cluster.naming import HandleCache, actor_names
from transports.base import Delivery
from transports.envelope import CorrelationKey, Envelope
from transports.errors import (
    INVALID_REQUEST,
    BusError,
    ConnectionClosed,
    InvalidMessage,
    MessageTooLarge,
)
from transports.frame import Frame

__all__ = ["BrokerBackend", "BrokerClientLink", "BrokerWire", "ReceiveRetry", "broker_lag"]

logger = logging.getLogger(__name__)

# A name not (yet) known may belong to a pool that just joined: membership is fetched
# again at most this often before a request is answered "unknown".
_MEMBERSHIP_REFRESH_S = 0.5
# A failed receive is retried after a pause that doubles up to this bound.
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 5.0


class ReceiveRetry:
    """What a receive loop does when a receive fails for a reason other than bad input.

    Ending the loop would be silent and final: a worker would stay in its consumer group
    holding partitions it never reads, a client would never hear an answer again. So the
    failure is logged and the receive tried again after a growing pause (a broker that
    times out under load is usually back within seconds).
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._delay_s = _RETRY_FIRST_S

    async def failed(self, exc: BaseException) -> None:
        logger.warning("%s: receive failed, again in %.1f s: %s", self._what, self._delay_s, exc)
        await asyncio.sleep(self._delay_s)  # a back-off, not a synchronisation
        self._delay_s = min(self._delay_s * 2, _RETRY_MAX_S)

    def succeeded(self) -> None:
        self._delay_s = _RETRY_FIRST_S


class BrokerWire(Protocol):
    """One client's connection to a broker: its own reply address and the pools' ones."""

    @property
    def reply_to(self) -> str: ...

    async def start(self) -> None: ...

    def destination_for_pool(self, pool: str) -> str: ...

    async def send(
        self, destination: str, frames: list[Frame]
    ) -> list[tuple[Frame, MessageTooLarge]]:
        """Send in order; returns the frames refused as over the broker's limit (with
        why), all others sent.

        Raises:
            BusError: the broker did not take a frame (after the others were tried).
        """
        ...

    async def next_delivery(self) -> Delivery:
        """Raises ConnectionClosed once closed; InvalidMessage/MessageTooLarge per bad one."""
        ...

    async def close(self) -> None: ...


class BrokerClientLink:
    def __init__(self, wire: BrokerWire, discovery: Any, on_frame: OnFrame) -> None:
        self._wire = wire
        self._discovery = discovery
        self._on_frame = on_frame
        self._membership: Membership | None = None
        self._membership_at = 0.0

    @property
    def reply_to(self) -> str:
        return self._wire.reply_to

    def submit(self, frames: list[Frame]) -> Awaitable[object]:
        return asyncio.ensure_future(self._submit(frames))

    async def _submit(self, frames: list[Frame]) -> None:
        by_destination: dict[str, list[Frame]] = {}
        for frame in frames:
            pool = await self._pool_for(frame)
            if isinstance(pool, Frame):  # the router's own answer to an unroutable request
                await self._on_frame(pool)
                continue
            by_destination.setdefault(self._wire.destination_for_pool(pool), []).append(frame)
        for destination, batch in by_destination.items():
            # One send per destination: a broker that confirms asynchronously (Kafka)
            # takes the whole batch in order and confirms it at once, where a send per
            # frame paid a broker round trip each.
            for frame, exc in await self._wire.send(destination, batch):
                # Never a silent drop: the caller hears why.
                await self._on_frame(error_reply(frame, INVALID_REQUEST, f"request refused: {exc}"))

    async def _pool_for(self, frame: Frame) -> str | Frame:
        target: str | Frame = ""
        for refresh in (False, True):
            now = time.monotonic()
            stale = now - self._membership_at > _MEMBERSHIP_REFRESH_S
            if self._membership is None or (refresh and stale):
                self._membership = await self._discovery.snapshot.remote()
                self._membership_at = now
            target = pool_for(self._membership, frame)
            if isinstance(target, str):
                return target
        return target

    def cancel(self, keys: list[CorrelationKey]) -> None:
        # A published request cannot be withdrawn from a topic or queue; the worker still
        # answers it and the client drops the late answer. (The router never saw it.)
        return

    async def receive(self) -> None:
        retry = ReceiveRetry("client answers")
        while True:
            try:
                delivery = await self._wire.next_delivery()
            except (InvalidMessage, MessageTooLarge) as exc:
                logger.warning("dropped an undecodable response: %s", exc)
                continue
            except ConnectionClosed:
                return
            except BusError as exc:  # a broker timeout or refusal: never end in silence
                await retry.failed(exc)
                continue
            retry.succeeded()
            await self._on_frame(Frame.of(delivery.envelope or Envelope(), delivery.message))
            try:
                await delivery.ack()
            except ConnectionClosed:
                return
            except BusError as exc:  # not acked: delivered again, and dropped as a repeat
                logger.warning("could not acknowledge an answer: %s", exc)

    async def start(self) -> None:
        await self._wire.start()

    async def close(self) -> None:
        await self._wire.close()


class BrokerBackend(abc.ABC):
    """What the Kafka and SQS backends share: clients and workers over a broker.

    A subclass says how a client talks to its broker (:meth:`_client_wire`) and what a
    worker runs (:meth:`_worker_link`, given the pool-wide idempotency ledger).
    """

    def __init__(self, config: BusConfig) -> None:
        self._config = config

    @property
    def calls_bypass_router(self) -> bool:
        return True  # workers take calls from the pools' topics or queues themselves

    @abc.abstractmethod
    def _client_wire(self, client_id: str) -> BrokerWire: ...

    @abc.abstractmethod
    def _worker_link(
        self,
        pool: PoolConfig,
        hosted: HostedServer,
        ledger: Any,
        *,
        server_id: str,
        capacity: int,
        handles: HandleCache,
    ) -> WorkerLink: ...

    async def open_client(
        self,
        client_name: str,
        router: Any,
        discovery: Any,
        on_frame: OnFrame,
        *,
        inbox: bool = False,
    ) -> ClientLink:
        # Answers come through the client's own topic or queue, inbox or not.
        wire = self._client_wire(client_name.rsplit("/", 1)[-1])
        link = BrokerClientLink(wire, discovery, on_frame)
        await link.start()
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
        ledger = await handles.get_async(actor_names.ledger(self._config.name))
        return self._worker_link(
            pool, hosted, ledger, server_id=server_id, capacity=capacity, handles=handles
        )


async def broker_lag(
    bus: str,
    handles: HandleCache,
    pools: Collection[str],
    queued: Callable[[str, int], Awaitable[int]],
) -> LagRows:
    """Per pool: ``queued(pool, in_flight)`` plus the calls in flight workers reported."""
    discovery = await handles.get_async(actor_names.discovery(bus))
    workers = await discovery.workers.remote()
    lag: LagRows = {}
    for pool in pools:
        in_flight = sum(w.in_flight for w in workers if w.pool == pool)
        lag[pool] = {
            "queued": await queued(pool, in_flight),
            "in_flight": in_flight,
            "oldest_age_s": None,
        }
    return lag
