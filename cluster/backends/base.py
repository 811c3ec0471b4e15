"""The one interface every backend implements, and the one place that picks it.

A backend is what carries calls between clients and workers. Everything outside this
package asks its :class:`Backend` and never which kind it is:

* a client (:class:`~cluster.client.BusClient`) opens a :class:`ClientLink`: how its
  frames are submitted, how calls are cancelled, where its answers come from;
* a worker opens a :class:`WorkerLink`: the source of deliveries it runs (none with Ray,
  where the router delivers) and the channel its heartbeats take;
* the discovery actor starts the backend's heartbeat feed (Kafka's discovery topic);
* the autoscaler reads the backend's lag signal;
* launching a bus settles what actors cannot settle themselves (SQS credentials) and
  starts an idempotency ledger where deliveries are at-least-once.

:func:`backend_for` imports the chosen implementation only: broker clients cost about
0.25 s of every worker start, so a Ray bus never imports aiokafka or aioboto3.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from actors.router.outcomes import CallTally
from transports.envelope import CorrelationKey
from transports.frame import Frame

if TYPE_CHECKING:
    from actors.discovery.registry import Heartbeat
    from actors.worker.hosted_server import HostedServer
    from cluster.config import BusConfig, PoolConfig
    from cluster.naming import HandleCache

__all__ = [
    "Backend",
    "ClientLink",
    "HeartbeatFeed",
    "Heartbeats",
    "LagRows",
    "OnFrame",
    "WorkerLink",
    "WorkerSource",
    "backend_for",
]

OnFrame = Callable[[Frame], Awaitable[None]]
# Per pool: {"queued": int, "in_flight": int, "oldest_age_s": float | None}, and with Ray
# the router's other columns (workers, capacity, breaker).
LagRows = dict[str, dict[str, Any]]


class ClientLink(Protocol):
    """One client's side of the bus, opened by :meth:`Backend.open_client`."""

    @property
    def reply_to(self) -> str:
        """The address workers answer this client's calls at (its envelopes' reply_to)."""
        ...

    def submit(self, frames: list[Frame]) -> Awaitable[object] | None:
        """Send one batch of requests (an :class:`~actors.outbox.Outbox` submit function).

        The awaitable fails when the batch could not be handed over; a request the bus
        refuses (unroutable, too large) is answered through ``on_frame`` instead. What
        it returns may be a str naming the router incarnation that took the batch (Ray):
        the client fails the calls of one that has since been replaced.
        """
        ...

    def cancel(self, keys: list[CorrelationKey]) -> None:
        """Withdraw calls the caller gave up on (fire and forget; best effort)."""
        ...

    async def receive(self) -> None:
        """Feed every answer, notification and server request to ``on_frame`` until the
        link closes or the task is cancelled."""
        ...

    async def close(self) -> None: ...


class WorkerSource(Protocol):
    """Where a worker takes requests from when the router does not deliver them."""

    @property
    def in_flight(self) -> int: ...

    async def start(self) -> None: ...

    def calls_ended(self) -> CallTally:
        """How the calls that ended since the last time asked ended (the worker's metrics:
        no router sees these calls)."""
        ...

    def emit(self, destination: str, frame: Frame) -> None:
        """Send what the server says about a call (progress, logs, answers) to its caller."""
        ...

    def withdraw(self, keys: list[CorrelationKey]) -> None:
        """Callers cancelled these calls: one that arrives later must not run."""
        ...

    async def stop(self, timeout_s: float) -> None:
        """Take no more, finish (and acknowledge) what runs, then disconnect."""
        ...


class Heartbeats(Protocol):
    """The channel a worker's heartbeats take to discovery."""

    # False when discovery cannot ask for a worker's catalog (a topic is one-way): the
    # worker then sends its catalog every few beats on its own.
    answers: bool

    async def send(self, beat: Heartbeat) -> bool:
        """Deliver one beat; True asks the worker to send its catalog next time.

        Raises:
            Exception: not delivered (the worker keeps what it wanted to announce).
        """
        ...


@dataclass(frozen=True, slots=True)
class WorkerLink:
    """A worker's side of the bus: ``source`` is None when the router delivers (Ray)."""

    source: WorkerSource | None
    heartbeats: Heartbeats


class HeartbeatFeed(Protocol):
    async def close(self) -> None: ...


class Backend(Protocol):
    """What carries calls between clients and workers; see the module docstring."""

    @property
    def ledger_ttl_s(self) -> float | None:
        """How long the bus's idempotency ledger remembers a request key; None: no ledger
        (nothing is delivered twice)."""
        ...

    @property
    def max_consumers(self) -> int | None:
        """Workers beyond this many would sit idle (Kafka: partitions); None: no cap."""
        ...

    @property
    def calls_bypass_router(self) -> bool:
        """True when workers take calls from the broker themselves: no router sees them,
        so each worker counts the calls it ends (metrics); False when the router routes
        every call and counts it."""
        ...

    async def settle(self) -> BusConfig:
        """The config with what actors cannot find themselves resolved here, at the edge.

        Raises:
            MissingCredentials: SQS against a remote endpoint with no credentials.
        """
        ...

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
        """Connect one client named ``client_name`` (a unique actor name).

        ``inbox``: the client runs inside the actor of that name, which hands every
        ``deliver(frames)`` call to ``on_frame`` itself; a backend that answers through
        actor calls then sends answers straight to it (no mailbox actor to poll).
        ``durable``: the name is kept across connections; answers produced while no
        connection reads wait in the broker, and closing cancels no call (brokers only).

        Raises:
            ValueError: ``durable`` on a backend without a broker (Ray).
        """
        ...

    async def open_worker(
        self,
        pool: PoolConfig,
        hosted: HostedServer,
        *,
        server_id: str,
        capacity: int,
        handles: HandleCache,
    ) -> WorkerLink:
        """A worker's link; its source (if any) is created but not yet started."""
        ...

    async def heartbeat_feed(self, on_beat: Callable[[Heartbeat], None]) -> HeartbeatFeed | None:
        """For the discovery actor: start reading beats that do not come as actor calls."""
        ...

    async def lag(self, handles: HandleCache, pools: Collection[str]) -> LagRows:
        """The autoscaler's signal for ``pools``: router queue, group lag or queue depth."""
        ...

    async def close(self) -> None:
        """Release what the backend keeps open between calls (Kafka: the lag reader's
        clients); links it opened are closed by their owners."""
        ...


def backend_for(config: BusConfig) -> Backend:
    """The backend ``config`` names; only its own module (and clients) get imported."""
    if config.backend == "kafka":
        from cluster.backends.kafka import KafkaBackend

        return KafkaBackend(config)
    if config.backend == "sqs":
        from cluster.backends.sqs import SqsBackend

        return SqsBackend(config)
    from cluster.backends.ray import RayBackend

    return RayBackend(config)
