"""The direct lane (Ray): a client sends ``tools/call`` straight to a worker of the pool.

Through the router a call makes four transits (client -> router -> worker -> the
caller's endpoint or inbox -> the caller); sent directly it makes two: one actor call to
the worker and its return, which carries the answer (the worker's half and the rules it
keeps are in :mod:`actors.worker.direct`). The client chooses the pool with the router's
own :func:`~actors.router.routing.pool_for`, from discovery's membership read again every
second, and the worker where it has the fewest calls of its own, below the worker's
capacity. Everything else takes the router: other methods, calls with an idempotency key
or run as tasks, a bus with regions, a pool without a free worker in view, and whatever a
worker bounces (it is full, draining, or its pool's breaker is not closed), so under load
the router's queue is still the autoscaler's lag.

A worker lost with a call on it fails that call with "may have run" (1004), as the router
would; a call that is safe to repeat goes to the router instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from actors.discovery.registry import Membership, ServerStatus
from actors.replies import error_reply
from actors.router.routing import attempts_made, pool_for, retry_safe, tried_once
from actors.worker.direct import DirectOutcome
from cluster.backends.direct_socket import CALL, COLLECT, DirectSockets
from cluster.naming import HandleCache
from transports.envelope import CorrelationKey
from transports.errors import BusError, BusErrorCode
from transports.frame import Frame

__all__ = ["MEMBERSHIP_REFRESH_S", "DirectLane"]

logger = logging.getLogger(__name__)

# How stale the client's view of the pools' workers may get (a drained worker that took
# direct calls waits longer than this before it goes: cluster.ray_actors.worker).
MEMBERSHIP_REFRESH_S = 1.0


def _direct_eligible(frame: Frame) -> bool:
    envelope = frame.envelope
    return (
        envelope.method == "tools/call"
        and envelope.idempotency_key is None  # the ledger's path (cluster.idempotency)
        and not any(name == "task" for name, _ in envelope.attributes)
    )


class _Overdue(Exception):
    """A worker held direct calls past their deadlines and the grace."""


class DirectLane:
    """One client's direct calls: where each went, and how many it has on each worker."""

    def __init__(
        self,
        discovery: Any,
        hand_over: Callable[[list[Frame]], Awaitable[None]],
        to_router: Callable[[list[Frame]], None],
        handles: HandleCache | None = None,
        *,
        grace_s: float = 2.0,
        sockets: DirectSockets | None = None,
    ) -> None:
        self._discovery = discovery
        self._hand_over = hand_over  # to the client, in order (cluster.backends.ray.dispatch)
        self._to_router = to_router
        self._handles = handles or HandleCache()
        # To workers on this node, past Ray's per-call cost (cluster.backends.direct_socket).
        self.sockets = sockets or DirectSockets()
        self._grace_s = grace_s  # router.overdue_grace_s
        self._membership: Membership | None = None
        self._read_at = float("-inf")
        self._reading: asyncio.Task[None] | None = None
        self._outstanding: dict[str, int] = {}
        self._where: dict[CorrelationKey, str] = {}
        self._runs: set[asyncio.Task[None]] = set()
        # Workers this client saw die, skipped until the membership no longer lists them.
        self._lost_workers: set[str] = set()

    def take(self, frames: list[Frame]) -> list[Frame]:
        """Send the calls that can go directly; returns those for the router."""
        self._refresh()
        membership = self._membership
        if membership is None:
            return frames
        routed: list[Frame] = []
        batches: dict[str, list[Frame]] = {}
        for frame in frames:
            worker = self._choose(membership, frame) if _direct_eligible(frame) else None
            if worker is None:
                routed.append(frame)
                continue
            batches.setdefault(worker, []).append(frame)
            self._outstanding[worker] = self._outstanding.get(worker, 0) + 1
            self._where[frame.envelope.correlation_key] = worker
        for worker, batch in batches.items():
            self._spawn(self._run(worker, batch))
        return routed

    def cancel(self, keys: list[CorrelationKey]) -> list[CorrelationKey]:
        """Tell the workers running these calls; returns the keys that are not direct."""
        by_worker: dict[str, list[CorrelationKey]] = {}
        routed: list[CorrelationKey] = []
        for key in keys:
            worker = self._where.get(key)
            if worker is None:
                routed.append(key)
            else:
                by_worker.setdefault(worker, []).append(key)
        for worker, worker_keys in by_worker.items():
            self._spawn(self._cancel(worker, worker_keys))
        return routed

    async def close(self) -> None:
        for task in list(self._runs):
            task.cancel()
        await asyncio.gather(*self._runs, return_exceptions=True)
        await self.sockets.close()

    def _choose(self, membership: Membership, frame: Frame) -> str | None:
        pool = pool_for(membership, frame)
        if not isinstance(pool, str):
            return None  # the router answers it, in its own words
        best: str | None = None
        best_count = 0
        for info in membership.workers.get(pool, ()):
            if info.status is ServerStatus.DRAINING or info.actor_name in self._lost_workers:
                continue
            count = self._outstanding.get(info.actor_name, 0)
            if count < info.capacity and (best is None or count < best_count):
                best, best_count = info.actor_name, count
        return best

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._read_at < MEMBERSHIP_REFRESH_S:
            return
        if self._reading is not None and not self._reading.done():
            return
        self._read_at = now
        self._reading = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        known = self._membership
        epoch, version = (known.epoch, known.version) if known is not None else ("", -1)
        try:
            membership: Membership | None = await self._discovery.snapshot_since.remote(
                epoch, version
            )
        except Exception as exc:  # noqa: BLE001 - the router's path serves meanwhile
            logger.debug("reading membership for direct calls failed: %s", exc)
            self._membership = None
            return
        if membership is None:
            return  # unchanged
        self._membership = membership
        live = {info.actor_name for infos in membership.workers.values() for info in infos}
        for gone in [worker for worker in self._outstanding if worker not in live]:
            del self._outstanding[gone]
        self._lost_workers &= live

    async def _run(self, worker: str, frames: list[Frame]) -> None:
        unsettled = {frame.envelope.correlation_key: frame for frame in frames}
        try:
            try:
                handle = await self._handles.get_async(worker)
            except BusError:  # never sent: the router serves them
                self._to_router(list(unsettled.values()))
                unsettled.clear()
                return
            sent = self._ask(worker, handle, CALL, frames)
            outcome = await self._within_deadlines(sent, unsettled)
            while True:
                if outcome.bounced:
                    for frame in outcome.bounced:
                        # No longer on this worker: its slot is free in this client's
                        # count, and a cancel of it goes to the router.
                        unsettled.pop(frame.envelope.correlation_key, None)
                        self._settle(frame.envelope.correlation_key)
                    self._to_router(outcome.bounced)
                running = set(outcome.running)
                for key in [key for key in unsettled if key not in running]:
                    del unsettled[key]  # answered here or delivered the ordinary way
                    self._settle(key)
                if outcome.answers:
                    await self._hand_over(outcome.answers)
                if not running:
                    return
                collected = self._ask(worker, handle, COLLECT, list(running))
                outcome = await self._within_deadlines(collected, unsettled)
        except _Overdue:
            await self._overdue(worker, list(unsettled.values()))
            unsettled.clear()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the worker is gone: fail what it held
            self._handles.forget(worker)
            self.sockets.forget(worker)
            await self._lost(worker, list(unsettled.values()), exc)
            unsettled.clear()
        finally:
            for key in unsettled:
                self._settle(key)
            if self._outstanding.get(worker, 0) <= 0:
                self._outstanding.pop(worker, None)

    def _ask(
        self, worker: str, handle: Any, op: str, payload: list[Any]
    ) -> Awaitable[DirectOutcome]:
        """``op`` (``call`` or ``collect``) on the worker's socket, else as a Ray call."""
        channel = self.sockets.channel(worker, handle)
        if channel is not None:
            return channel.request(op, payload)
        method = handle.call if op == CALL else handle.collect
        answer: Awaitable[DirectOutcome] = method.remote(payload)
        return answer

    async def _within_deadlines(
        self, answer: Awaitable[DirectOutcome], unsettled: dict[CorrelationKey, Frame]
    ) -> DirectOutcome:
        """``answer``, or :class:`_Overdue` once the last deadline of ``unsettled`` is
        ``grace_s`` past: a worker that never answers (its loop blocked, its answer lost)
        must not leave its callers waiting, as the router's overdue watch does not."""
        deadlines = [f.envelope.deadline_unix_s for f in unsettled.values()]
        if not deadlines or None in deadlines:
            return await answer
        last = max(d for d in deadlines if d is not None)
        try:
            async with asyncio.timeout(max(0.0, last - time.time()) + self._grace_s):
                return await answer
        except TimeoutError:
            raise _Overdue from None

    async def _overdue(self, worker: str, frames: list[Frame]) -> None:
        keys = [frame.envelope.correlation_key for frame in frames]
        for key in keys:
            # Its slot stays counted, as the router keeps it: nothing more is sent to a
            # worker that holds calls past their deadlines until it lets go of them or
            # leaves the membership (see _read).
            self._where.pop(key, None)
        reason = f"worker {worker} did not answer by the deadline; the call may have run"
        await self._hand_over(
            [error_reply(f, BusErrorCode.DEADLINE_EXCEEDED, reason) for f in frames]
        )
        self._spawn(self._cancel(worker, keys))

    def _settle(self, key: CorrelationKey) -> None:
        worker = self._where.pop(key, None)
        if worker is not None:
            self._outstanding[worker] = max(0, self._outstanding.get(worker, 0) - 1)

    async def _lost(self, worker: str, frames: list[Frame], exc: BaseException) -> None:
        logger.warning("worker %s was lost with %d direct call(s): %s", worker, len(frames), exc)
        membership = self._membership
        again: list[Frame] = []
        failed: list[Frame] = []
        for frame in frames:
            self._settle(frame.envelope.correlation_key)
            envelope = frame.envelope
            pool = pool_for(membership, frame) if membership is not None else None
            safe = isinstance(pool, str) and retry_safe(
                membership, envelope.method or "", pool, envelope.name or ""
            )
            if safe and attempts_made(frame) == 0:  # one retry, as the router allows
                again.append(tried_once(frame, worker))
                continue
            reason = f"the worker serving the call was lost ({type(exc).__name__}): it may have run"
            failed.append(error_reply(frame, BusErrorCode.OUTCOME_UNKNOWN, reason))
        if failed:
            await self._hand_over(failed)
        if again:
            # Retried on another worker of this lane (the router may not know yet that
            # this one died, and would spend the one retry on it); what finds no room
            # goes to the router, marked as run once so its retry bound counts that run.
            self._lost_workers.add(worker)
            routed = self.take(again)
            if routed:
                self._to_router(routed)

    async def _cancel(self, worker: str, keys: list[CorrelationKey]) -> None:
        try:
            handle = await self._handles.get_async(worker)
            await handle.cancel.remote(keys)
        except Exception as exc:  # noqa: BLE001 - best effort: the caller has its outcome
            logger.warning("could not cancel %d call(s) on %s: %s", len(keys), worker, exc)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._runs.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._runs.discard)
