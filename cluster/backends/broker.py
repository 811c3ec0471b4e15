"""What Kafka and SQS share on the client side and in the autoscaler's lag signal.

A broker client routes each request itself (the same :func:`~actors.router.routing.pool_for`
the router uses, over discovery's membership) and sends it to its pool's topic or queue;
answers come from the client's own topic or queue. Each backend supplies only its
:class:`BrokerWire`: addresses, sending, and the next delivery.

No router sees these calls, so the client link does the router's part itself: a circuit
breaker per pool (in the client: :mod:`actors.broker_calls` says why) and cancellations
carried to the ledger and the pool's workers (:class:`BrokerClientLink`). Receive loops
outlive a broker that goes away: they end only when closed here.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol

from actors.broker_calls import BrokerCalls
from actors.discovery.registry import Membership
from actors.replies import error_reply
from actors.router.breaker import BreakerConfig, BreakerState
from actors.router.regions import RegionPolicy
from actors.router.routing import pool_for
from actors.worker.hosted_server import HostedServer
from cluster.backends.base import ClientLink, LagRows, OnFrame, WorkerLink
from cluster.backends.sealed import SealedClientWire, channel_for, keys_follower
from cluster.config import BusConfig, PoolConfig
from cluster.naming import HandleCache, actor_names
from transports.base import Delivery
from transports.crypto.seal import Direction
from transports.envelope import CorrelationKey, Envelope
from transports.errors import (
    INVALID_REQUEST,
    BusError,
    BusErrorCode,
    ConnectionClosed,
    DeliveryUnconfirmed,
    FramesNotSent,
    InvalidMessage,
    MessageTooLarge,
)
from transports.frame import Frame
from transports.message import Response

__all__ = [
    "BrokerBackend",
    "BrokerClientLink",
    "BrokerWire",
    "ReceiveRetry",
    "broker_lag",
    "request_key",
]

logger = logging.getLogger(__name__)

# A name not (yet) known may belong to a pool that just joined: membership is fetched
# again at most this often before a request is answered "unknown".
_MEMBERSHIP_REFRESH_S = 0.5
# A failed receive is retried after a pause that doubles up to this bound.
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 5.0
# Closing waits this long at most for its calls' cancellations to be told.
_CANCEL_ON_CLOSE_S = 5.0
# How long one batch of cancels may hold up the next (see BrokerClientLink._send_cancels).
_CANCEL_BATCH_S = 10.0


def request_key(key: CorrelationKey) -> str:
    """A call's key in the pool-wide idempotency ledger."""
    return "\x1f".join(key)


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

    async def crashed(self, exc: BaseException) -> None:
        """A failure no broker explains (a bug, or a client error we do not translate):
        logged with its traceback, then retried like any other."""
        logger.error("%s: receive raised unexpectedly", self._what, exc_info=exc)
        await self.failed(exc)

    def succeeded(self) -> None:
        self._delay_s = _RETRY_FIRST_S


class BrokerWire(Protocol):
    """One client's connection to a broker: its own reply address and the pools' ones."""

    @property
    def reply_to(self) -> str: ...

    async def start(self) -> None: ...

    def destination_for_pool(self, pool: str) -> str: ...

    async def send(self, destination: str, frames: list[Frame]) -> list[tuple[Frame, BusError]]:
        """Send in order; returns the frames that did not surely arrive, each with why:

        * :class:`MessageTooLarge`: refused as over the broker's limit; not sent;
        * :class:`DeliveryUnconfirmed`: handed over, never confirmed; it may arrive;
        * any other ``BusError``: not handed over (the broker was not reachable).

        All frames not returned were confirmed by the broker.
        """
        ...

    async def next_delivery(self) -> Delivery:
        """Raises ConnectionClosed once closed (or the broker is unreachable: see
        :meth:`is_connected`); InvalidMessage/MessageTooLarge per bad one."""
        ...

    def is_connected(self) -> bool:
        """False once closed here (a broker that went away may come back)."""
        ...

    async def close(self) -> None: ...


class BrokerClientLink:
    """A client on a broker backend: routes, guards and cancels its own calls.

    No router sees these calls, so the link does what the router does for Ray: it fails
    calls to a failing pool fast (a breaker per pool, :class:`~actors.broker_calls.BrokerCalls`)
    and carries cancellations to the workers. A published request cannot be withdrawn
    from a topic or queue, so a cancellation is told twice: to the pool-wide ledger (a
    worker that takes the request later answers it "cancelled" without running it) and
    to every worker of the pool (the one running it cancels it on its server); a call this
    link did not send (an earlier link of the same client did) to every pool's. Closing
    the link cancels every call still in flight: a client that goes away leaves no tool
    running for nobody; unless ``durable``: its answers wait for it in the broker.
    """

    def __init__(
        self,
        wire: BrokerWire,
        discovery: Any,
        on_frame: OnFrame,
        *,
        bus: str,
        breaker: BreakerConfig,
        handles: HandleCache | None = None,
        regions: RegionPolicy | None = None,
        durable: bool = False,
    ) -> None:
        self._wire = wire
        self._regions = regions
        self._durable = durable
        self._discovery = discovery
        self._on_frame = on_frame
        self._bus = bus
        self._handles = handles or HandleCache()
        self.calls = BrokerCalls(breaker)
        self._membership: Membership | None = None
        self._membership_at = 0.0
        # Cancellations go out one batch at a time, in the order the client made them: a
        # queued call cancelled before a running one is withdrawn on the worker before the
        # running one's slot frees (which would let the queued call start).
        self._cancels_pending: list[tuple[str | None, CorrelationKey]] = []
        self._canceller: asyncio.Task[None] | None = None
        self._late_cancels: set[asyncio.Future[list[None]]] = set()  # held: see _send_cancels

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
            refused = self.calls.admit(frame, pool)
            if refused is not None:  # the pool's breaker is open: fail fast, send nothing
                await self._on_frame(refused)
                continue
            by_destination.setdefault(self._wire.destination_for_pool(pool), []).append(frame)
        unsent: list[Frame] = []
        cause: BusError | None = None
        try:
            for destination, batch in by_destination.items():
                # One send per destination: a broker that confirms asynchronously (Kafka)
                # takes the whole batch in order and confirms it at once, where a send
                # per frame paid a broker round trip each.
                for frame, exc in await self._wire.send(destination, batch):
                    # Never a silent drop, never an untrue one: the caller hears why.
                    self.calls.withdraw(frame.envelope.correlation_key)
                    if isinstance(exc, MessageTooLarge):
                        reply = error_reply(frame, INVALID_REQUEST, f"request refused: {exc}")
                    elif isinstance(exc, DeliveryUnconfirmed):
                        reply = error_reply(
                            frame,
                            BusErrorCode.OUTCOME_UNKNOWN,
                            f"the broker did not confirm the request ({exc}): it may have run",
                        )
                    else:
                        unsent.append(frame)
                        cause = exc
                        continue
                    await self._on_frame(reply)
        except BaseException:
            # The whole batch fails (its callers are told): none of it is a verdict.
            for batch in by_destination.values():
                for frame in batch:
                    self.calls.withdraw(frame.envelope.correlation_key)
            raise
        if unsent:
            # Only these failed: the batch's others reached the broker and will be answered.
            keys = frozenset(frame.envelope.correlation_key for frame in unsent)
            raise FramesNotSent(f"not sent to the broker: {cause}", keys)

    async def _pool_for(self, frame: Frame) -> str | Frame:
        target: str | Frame = ""
        for refresh in (False, True):
            membership = await self._current_membership(refresh)
            target = pool_for(membership, frame, self._regions, self._available)
            if isinstance(target, str):
                return target
        return target

    def _available(self, pool: str) -> bool:
        """Can ``pool`` serve a regioned call now? Its breaker here is not open, and it
        sleeps at min_workers 0 or discovery lists a worker of it."""
        if self.calls.breaker(pool).state is BreakerState.OPEN:
            return False
        if self._regions is None or pool in self._regions.waking_pools:
            return True
        return bool(self._membership is not None and self._membership.workers.get(pool))

    async def _current_membership(self, refresh: bool) -> Membership:
        now = time.monotonic()
        stale = now - self._membership_at > _MEMBERSHIP_REFRESH_S
        if self._membership is None or (refresh and stale):
            self._membership = await self._discovery.snapshot.remote()
            self._membership_at = now
        return self._membership

    def cancel(self, keys: list[CorrelationKey]) -> None:
        # A key this link does not hold was sent by an earlier link of the same client (a
        # task store Ray restarted, a durable client that reconnected) or has just been
        # answered: told to every pool (None), as the pool it went to is not known here.
        self._cancels_pending.extend((self.calls.withdraw(key), key) for key in keys)
        if self._canceller is None or self._canceller.done():
            self._canceller = asyncio.get_running_loop().create_task(self._send_cancels())

    async def _send_cancels(self) -> None:
        while self._cancels_pending:
            pending, self._cancels_pending = self._cancels_pending, []
            by_pool: dict[str | None, list[CorrelationKey]] = {}
            for pool, key in pending:
                by_pool.setdefault(pool, []).append(key)
            sending = asyncio.gather(*(self._cancel(pool, k) for pool, k in by_pool.items()))
            # Bounded: a worker that never answers must not hold up later cancels. A
            # late batch is not abandoned (cancelling it would leave its calls running):
            # it goes on while the next one starts.
            _, late = await asyncio.wait({sending}, timeout=_CANCEL_BATCH_S)
            if late:
                self._late_cancels |= late
                sending.add_done_callback(self._late_cancels.discard)
                logger.warning(
                    "cancelling %d call(s) took over %.0f s", len(pending), _CANCEL_BATCH_S
                )

    async def _cancel(self, pool: str | None, keys: list[CorrelationKey]) -> None:
        try:
            ledger = await self._handles.get_async(actor_names.ledger(self._bus))
            # First the ledger (a request still in the broker never runs), then the
            # workers (the one running it stops it): in this order no gap is left between.
            await asyncio.gather(*(ledger.withdraw.remote(request_key(key)) for key in keys))
            membership = await self._current_membership(refresh=True)
            workers = (
                membership.workers.get(pool, ())
                if pool is not None
                else [w for pool_workers in membership.workers.values() for w in pool_workers]
            )
            handles = [await self._handles.get_async(w.actor_name) for w in workers]
            told = await asyncio.gather(
                *(handle.cancel.remote(keys) for handle in handles), return_exceptions=True
            )
            for worker, outcome in zip(workers, told, strict=True):
                if isinstance(outcome, BaseException):
                    logger.warning("could not cancel on %s: %s", worker.actor_name, outcome)
        except Exception:  # a cancellation is best effort; the caller has its outcome
            logger.exception("cancelling %d call(s) on pool %s failed", len(keys), pool or "any")

    async def receive(self) -> None:
        retry = ReceiveRetry("client answers")
        while True:
            try:
                delivery = await self._wire.next_delivery()
            except (InvalidMessage, MessageTooLarge) as exc:
                logger.warning("dropped an undecodable response: %s", exc)
                continue
            except ConnectionClosed as exc:
                if not self._wire.is_connected():
                    return  # closed here
                await retry.failed(exc)  # the broker went away: it may come back
                continue
            except BusError as exc:  # a broker timeout or refusal: never end in silence
                await retry.failed(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - top of a loop whose end would be silent
                await retry.crashed(exc)
                continue
            retry.succeeded()
            envelope = delivery.envelope or Envelope()
            if isinstance(delivery.message, Response):
                self.calls.answered(envelope.correlation_key, delivery.message)
            await self._on_frame(Frame.of(envelope, delivery.message))
            try:
                await delivery.ack()
            except BusError as exc:  # not acked: delivered again, and dropped as a repeat
                if not self._wire.is_connected():
                    return
                logger.warning("could not acknowledge an answer: %s", exc)

    async def start(self) -> None:
        await self._wire.start()

    async def close(self) -> None:
        if not self._durable:
            self.cancel(self.calls.in_flight())
        if self._canceller is not None:
            await asyncio.wait({self._canceller}, timeout=_CANCEL_ON_CLOSE_S)
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
    def _client_wire(self, client_id: str, *, durable: bool) -> BrokerWire: ...

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
        durable: bool = False,
    ) -> ClientLink:
        # Answers come through the client's own topic or queue, inbox or not.
        wire: BrokerWire = self._client_wire(client_name.rsplit("/", 1)[-1], durable=durable)
        channel = channel_for(self._config, client_name, Direction.TO_WORKER)
        if channel is not None:  # the bus is encrypted end to end
            follower = keys_follower(self._config, channel, f"client {client_name}")
            wire = SealedClientWire(wire, channel, follower)
        router = self._config.router
        link = BrokerClientLink(
            wire,
            discovery,
            on_frame,
            bus=self._config.name,
            breaker=router.breaker,
            regions=router.regions,
            durable=durable,
        )
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

    async def close(self) -> None:
        return None  # nothing kept open here; a subclass with a lag reader closes it


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
