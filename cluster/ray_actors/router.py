"""The router as a Ray actor: :class:`~actors.router.core.RouterCore` plus its Ray ports.

Inbound calls (``submit``, ``cancel``, ``completed``) each carry a batch. Outbound
traffic is coalesced per destination by :class:`~actors.outbox.Outbox`: one ``deliver``
per worker and one ``deliver`` per client endpoint per event-loop turn. A worker answers
each ``deliver`` with the completions it holds, so under load workers rarely call
``completed`` at all (:mod:`actors.worker.completions`).

Metrics (calls by outcome, latency, breaker states) are recorded in this process's
registry, one tally per batch; a timer forwards them to ``ray.util.metrics`` every
second and ``metrics_snapshot`` hands them to ``raybus up --metrics-port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import asdict
from typing import Any

import ray

from actors.discovery.registry import Membership, without_workers
from actors.outbox import BUSY_INTERVAL_S, Outbox
from actors.router.completion import DirectReport
from actors.router.core import Completion, RouterConfig, RouterCore
from cluster.metrics.ray_export import RayExport, export_forever
from cluster.metrics.recorders import RouterRecorder
from cluster.metrics.registry import FamilySnapshot, MetricsRegistry
from cluster.naming import HandleCache, actor_names
from cluster.ray_actors.restarts import restarted, start_itself
from cluster.telemetry import install_tracing
from transports.envelope import CorrelationKey
from transports.errors import BusError
from transports.frame import Frame

__all__ = ["RouterActor"]

logger = logging.getLogger(__name__)

_TICK_S = 0.05
# Looking again for workers listed by discovery whose handles did not resolve: every
# 0.5 s for up to 20 s (discovery evicts a dead one well before that).
_LOOKUP_RETRY_S = 0.5
_LOOKUP_RETRIES = 40


class _RayRouterPorts:
    def __init__(self, handles: HandleCache, core: RouterCore | None = None) -> None:
        self.handles = handles
        self.core = core
        self.replies: Outbox[str, Frame] = Outbox(
            self._send_replies, min_interval_s=BUSY_INTERVAL_S
        )
        self.deliveries: Outbox[str, Frame] = Outbox(
            self._send_deliveries,
            on_failure=self._delivery_failed,
            on_answer=self._delivery_answered,
            min_interval_s=BUSY_INTERVAL_S,
        )

    def deliver(self, worker: str, frames: list[Frame]) -> None:
        for frame in frames:
            self.deliveries.put(worker, frame)

    def _send_deliveries(self, worker: str, frames: list[Frame]) -> Any:
        prompt = self.core is not None and self.core.wants_prompt_completions(worker)
        return self.handles.get(worker).deliver.remote(frames, prompt)

    def _delivery_answered(self, worker: str, completions: object) -> None:
        # A worker answers a deliver with the completions it held (see
        # actors.worker.completions): news of calls that ended, at no call of its own.
        if self.core is not None and isinstance(completions, list) and completions:
            self.core.completed(worker, completions)

    def _delivery_failed(self, worker: str, frames: list[Frame], exc: BaseException) -> None:
        self.handles.forget(worker)
        if self.core is not None:
            self.core.delivery_failed(worker, frames, repr(exc))

    def cancel(self, worker: str, keys: list[CorrelationKey]) -> None:
        # Sent directly: a cancellation must not wait behind a batch of new calls.
        self.handles.get(worker).cancel.remote(keys)

    def breaker_opened(self, worker: str) -> None:
        # Sent directly, as a cancel: it must not wait behind a batch of new calls. A
        # worker whose handle is gone takes no calls at all.
        with contextlib.suppress(BusError):
            self.handles.get(worker).breaker_opened.remote()

    def reply(self, frames: list[Frame]) -> None:
        for frame in frames:
            if frame.envelope.reply_to is not None:
                self.replies.put(frame.envelope.reply_to, frame)

    def _send_replies(self, destination: str, frames: list[Frame]) -> Any:
        try:
            return self.handles.get(destination).deliver.remote(frames)
        except BusError as exc:
            logger.warning("dropped %d reply(ies) for %s: %s", len(frames), destination, exc)
            return None


@ray.remote
class RouterActor:
    def __init__(self, bus: str, config: RouterConfig) -> None:
        install_tracing("router")
        self._bus = bus
        self._handles = HandleCache()
        self._ports = _RayRouterPorts(self._handles)
        self._metrics = MetricsRegistry(bus)
        self._recorder = RouterRecorder(self._metrics)
        self._core = RouterCore(config, self._ports, metrics=self._recorder)
        self._ports.core = self._core
        self._ticker: asyncio.Task[None] | None = None
        self._exporter: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Task[None] | None = None
        self._membership_epoch = ""
        self._retries: set[asyncio.Task[None]] = set()
        self._membership_version = -1
        # Names this incarnation to clients: calls accepted by a router that died are
        # lost with its queue, and a client seeing a new name fails them (1004).
        self._incarnation = uuid.uuid4().hex
        if restarted():  # subscribe again at once, not only on the next call
            start_itself("start", lambda: self._ticker is not None)

    async def start(self) -> None:
        """Subscribe to discovery and start the deadline / breaker timer.

        Every inbound call runs this too and waits for it, so a router Ray restarted
        after a crash knows the pools again before it routes a call (else it would
        answer "unknown tool" for every tool).
        """
        if self._ticker is None:
            loop = asyncio.get_running_loop()
            self._ticker = loop.create_task(self._tick_forever())
            export = RayExport(self._metrics)
            self._exporter = loop.create_task(export_forever(export, refresh=self._read_breakers))
        task = self._subscribed
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._subscribed = asyncio.get_running_loop().create_task(self._subscribe())
        await asyncio.shield(task)

    async def _subscribe(self) -> None:
        discovery = await self._handles.get_async(actor_names.discovery(self._bus))
        await discovery.subscribe.remote(actor_names.router(self._bus))
        await self.on_membership(await discovery.snapshot.remote(), set())

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(_TICK_S)  # the timer's period, not synchronisation
            try:
                self._core.tick()
            except Exception:  # the timer must survive one bad tick
                logger.exception("router tick failed")

    async def submit(self, frames: list[Frame]) -> str:
        """Route a batch of calls; returns this router's incarnation (see ``__init__``)."""
        await self.start()
        self._core.submit(frames)
        return self._incarnation

    async def cancel(self, keys: list[CorrelationKey]) -> None:
        await self.start()
        self._core.cancel(keys)

    async def completed(self, worker: str, completions: list[Completion]) -> None:
        await self.start()
        self._core.completed(worker, completions)

    async def direct_ended(self, worker: str, report: DirectReport) -> str:
        """Calls clients sent ``worker`` directly: counted here (see
        :mod:`actors.worker.direct`); answers the pool's breaker state."""
        await self.start()
        return self._core.direct_ended(worker, report).value

    async def lane_held(
        self, lane: str, rows: dict[str, tuple[int, float]], ended: list[tuple[str, str, str]]
    ) -> None:
        """What a client's direct lane holds for pools' slots: counted in their lag."""
        await self.start()
        self._core.lane_held(lane, rows, ended)

    async def on_membership(
        self, membership: Membership, changed_kinds: set[str], *, attempt: int = 0
    ) -> None:
        if self._known(membership):
            return
        names = [info.actor_name for infos in membership.workers.values() for info in infos]
        found = await asyncio.gather(
            *(self._handles.get_async(name) for name in names), return_exceptions=True
        )
        gone = {
            name
            for name, handle in zip(names, found, strict=True)
            if isinstance(handle, BaseException)
        }
        if self._known(membership):  # the same or newer news was applied meanwhile
            return
        self._membership_epoch = membership.epoch
        self._membership_version = membership.version
        # A worker that died since its last heartbeat is still listed until discovery
        # evicts it; its lookup fails. Adopt everyone else now: dropping the whole
        # snapshot would hide the pool's new workers until the next change.
        self._core.apply_membership(without_workers(membership, gone) if gone else membership)
        if gone:
            # A lookup can also fail for a worker that is alive but not yet resolvable
            # (seen right after a restart on a loaded machine); discovery sends nothing
            # new for it, so look again until it resolves or newer news arrives.
            if attempt < _LOOKUP_RETRIES:
                self._membership_version = membership.version - 1
                asyncio.get_running_loop().call_later(
                    _LOOKUP_RETRY_S, self._retry_membership, membership, attempt + 1
                )
            else:
                logger.warning("workers %s did not resolve; routing without them", sorted(gone))

    def _retry_membership(self, membership: Membership, attempt: int) -> None:
        if self._known(membership):
            return  # newer news arrived meanwhile
        task = asyncio.get_running_loop().create_task(
            self.on_membership(membership, set(), attempt=attempt)
        )
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    def _known(self, membership: Membership) -> bool:
        # Versions compare within one registry only: a restarted one has a new epoch.
        return (
            membership.epoch == self._membership_epoch
            and membership.version <= self._membership_version
        )

    async def retire(self, worker: str) -> int:
        return self._core.retire(worker)

    async def forget_worker(self, worker: str) -> None:
        self._core.forget_worker(worker)
        self._handles.forget(worker)

    async def lag(self) -> dict[str, dict[str, Any]]:
        return {pool: asdict(lag) for pool, lag in self._core.lag().items()}

    async def outstanding(self) -> dict[str, int]:
        return self._core.outstanding_by_worker()

    async def metrics_snapshot(self) -> list[FamilySnapshot]:
        """Calls by outcome, latencies and breaker states (``raybus up --metrics-port``)."""
        self._read_breakers()
        return self._metrics.snapshot()

    def _read_breakers(self) -> None:
        self._recorder.breakers(self._core.breaker_states())

    async def ping(self) -> str:
        return "pong"

    async def incarnation(self) -> str:
        """This router's incarnation, as :meth:`submit` answers it (clients that send
        it nothing else ask, to learn that it restarted holding their calls)."""
        return self._incarnation
