"""The direct lane (Ray): a client sends ``tools/call`` straight to a worker of the pool.

Through the router a call makes four transits (client -> router -> worker -> the
caller's endpoint or inbox -> the caller); sent directly it makes two: one actor call to
the worker and its return, which carries the answer (the worker's half and the rules it
keeps are in :mod:`actors.worker.direct`). The client chooses the pool with the router's
own :func:`~actors.router.routing.pool_for`, from discovery's membership read again every
second, and the worker where it has the fewest calls of its own, below the worker's
capacity. A call whose pool has no free worker in view waits in the lane (arrival order
per pool, :mod:`.lane_queue`) for the first of this client's slots to free, and the lane
reports what it holds to the router, which counts it in the pool's lag, the autoscaler's
signal. Everything else takes the router: other methods, calls with an idempotency key
or run as tasks, a bus with regions, a pool with no worker to wait for, calls past the
lane's bound, and whatever a worker bounces (it is full, draining, or its pool's breaker
is not closed).

A worker lost with a call on it fails that call with "may have run" (1004), as the router
would; a call that is safe to repeat goes to the router instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from actors.discovery.registry import Membership, ServerStatus, WorkerInfo
from actors.replies import error_reply
from actors.router.routing import attempts_made, pool_for, retry_safe, tried_once
from actors.worker.direct import DirectOutcome
from cluster.backends.direct_socket import CALL, COLLECT, DirectSockets
from cluster.backends.lane_queue import HeldEnd, HeldRows, LaneQueue
from cluster.naming import HandleCache
from transports.envelope import CorrelationKey
from transports.errors import BusError, BusErrorCode
from transports.frame import Frame

__all__ = ["MEMBERSHIP_REFRESH_S", "DirectLane"]

logger = logging.getLogger(__name__)

# How stale the client's view of the pools' workers may get (a drained worker that took
# direct calls waits longer than this before it goes: cluster.ray_actors.worker).
MEMBERSHIP_REFRESH_S = 1.0
# While the lane holds calls it looks this often for deadlines passed, workers added
# (the membership) and news for the router.
_HOLD_TICK_S = 0.1
_HELD_REFRESH_S = 0.25
# The router hears what the lane holds at most this often while it changes (the
# autoscaler reads the lag every 0.5 s; each report is an actor call, ~1.5 ms of this
# process's CPU measured) and at least every _HELD_KEEP_S while anything is held: it
# forgets a lane silent for longer (actors.router.lanes). The first report of a lane
# that held nothing goes at the first tick.
_HELD_REPORT_MIN_S = 0.5
_HELD_KEEP_S = 1.0


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
        report_held: Callable[[HeldRows, list[HeldEnd]], None] | None = None,
        max_held_per_pool: int = 10_000,
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
        # Workers that said they take no direct calls now (their pool's breaker is not
        # closed, they drain): skipped until the membership is read again, so calls go
        # to the router without a direct attempt each (and the worker's report of it).
        self._closed_workers: set[str] = set()
        # Of this client's calls on each worker, those it answered as overdue: their
        # slots stay counted, and no call waits here for them to free.
        self._overdue_on: dict[str, int] = {}
        # Calls waiting for a slot; held only when the router hears of them (its lag).
        self._held = LaneQueue(max_held_per_pool)
        self._report_held = report_held
        self._reported: dict[str, int] = {}  # held per pool, as the router last heard
        self._reported_at = float("-inf")
        self._tick: asyncio.TimerHandle | None = None
        self._pump_due = False
        self._answering: set[asyncio.Future[None]] = set()

    def take(self, frames: list[Frame]) -> list[Frame]:
        """Send the calls that can go directly; returns those for the router."""
        self._refresh()
        membership = self._membership
        if membership is None:
            return frames
        routed: list[Frame] = []
        batches: dict[str, list[Frame]] = {}
        for frame in frames:
            pool = pool_for(membership, frame) if _direct_eligible(frame) else None
            if not isinstance(pool, str):  # the router answers it, in its own words
                routed.append(frame)
                continue
            if frame.envelope.correlation_key in self._held:
                routed.append(frame)  # an id already waiting: the router refuses it
                continue
            # Behind calls already waiting for this pool, a new one waits its turn.
            worker = None if self._held.holds_for(pool) else self._choose(membership, pool)
            if worker is not None:
                self._send_to(worker, frame, batches)
            elif self._may_hold(membership, pool):
                self._held.hold(frame, pool)
            else:
                routed.append(frame)
        self._send_batches(batches)
        if self._held:
            self._keep_ticking()
        return routed

    def cancel(self, keys: list[CorrelationKey]) -> list[CorrelationKey]:
        """Tell the workers running these calls; returns the keys that are not direct."""
        by_worker: dict[str, list[CorrelationKey]] = {}
        routed: list[CorrelationKey] = []
        for key in keys:
            if self._held.cancel(key):
                self._keep_ticking()  # the router counts it (CallOutcome.CANCELLED)
                continue
            worker = self._where.get(key)
            if worker is None:
                routed.append(key)
            else:
                by_worker.setdefault(worker, []).append(key)
        for worker, worker_keys in by_worker.items():
            self._spawn(self._cancel(worker, worker_keys))
        return routed

    async def close(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        held = self._release_all()
        if held:  # still the caller's: the router serves them
            self._to_router(held)
        if self._report_held is not None and (self._reported or self._held.has_ended()):
            self._report_held({}, self._held.take_ended())
        # Answers of held calls that expired are the caller's: they go out, not cancelled.
        await asyncio.gather(*self._answering, return_exceptions=True)
        for task in list(self._runs):
            task.cancel()
        await asyncio.gather(*self._runs, return_exceptions=True)
        await self.sockets.close()

    def _usable(self, info: WorkerInfo) -> bool:
        name = info.actor_name
        return (
            info.status is not ServerStatus.DRAINING
            and name not in self._lost_workers
            and name not in self._closed_workers
        )

    def _slot_will_free(self, membership: Membership, pool: str) -> bool:
        """Is a slot of this client's on a worker of ``pool`` free, or will one free:
        does a worker hold a call of this client's that will end (not one already
        answered as overdue)?"""
        for info in membership.workers.get(pool, ()):
            if not self._usable(info):
                continue
            name = info.actor_name
            mine = self._outstanding.get(name, 0)
            if mine > self._overdue_on.get(name, 0):
                return True
            if mine < info.capacity:
                return True
        return False

    def _may_hold(self, membership: Membership, pool: str) -> bool:
        """Can a call of ``pool`` wait here: the router hears of it, the lane's bound
        has room, and a slot of this client's will free?"""
        return (
            self._report_held is not None
            and self._held.has_room(pool)
            and self._slot_will_free(membership, pool)
        )

    def _choose(self, membership: Membership, pool: str) -> str | None:
        best: str | None = None
        best_count = 0
        for info in membership.workers.get(pool, ()):
            if not self._usable(info):
                continue
            count = self._outstanding.get(info.actor_name, 0)
            if count < info.capacity and (best is None or count < best_count):
                best, best_count = info.actor_name, count
        return best

    def _refresh(self) -> None:
        now = time.monotonic()
        # Calls waiting here want the workers the autoscaler adds at once (the router
        # hears of them by a push; the lane only by reading).
        period = _HELD_REFRESH_S if self._held else MEMBERSHIP_REFRESH_S
        if now - self._read_at < period:
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
            self._pump_soon()  # what waits here goes to the router, in order
            return
        self._closed_workers.clear()  # worth another try
        if membership is None:
            return  # unchanged: nothing new for held calls (the tick pumps them anyway)
        self._membership = membership
        live = {info.actor_name for infos in membership.workers.values() for info in infos}
        for gone in [worker for worker in self._outstanding if worker not in live]:
            del self._outstanding[gone]
            self._overdue_on.pop(gone, None)
        self._lost_workers &= live
        if self._held:  # workers may have joined
            self._pump_soon()

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
                if outcome.closed:
                    self._closed_workers.add(worker)
                if outcome.bounced:
                    for frame in outcome.bounced:
                        # No longer on this worker: its slot is free in this client's
                        # count, and a cancel of it goes to the router.
                        unsettled.pop(frame.envelope.correlation_key, None)
                        self._settle(frame.envelope.correlation_key)
                    # The router decides (breaker, draining, a worker full of others'
                    # calls): see the README's "The router still decides under load".
                    self._to_router(outcome.bounced)
                running = set(outcome.running)
                ended = [key for key in unsettled if key not in running]
                for key in ended:
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
        self._overdue_on[worker] = self._overdue_on.get(worker, 0) + len(keys)
        if self._held:
            self._pump_soon()  # calls waiting for those slots wait no more
        reason = f"worker {worker} did not answer by the deadline; the call may have run"
        await self._hand_over(
            [error_reply(f, BusErrorCode.DEADLINE_EXCEEDED, reason) for f in frames]
        )
        self._spawn(self._cancel(worker, keys))

    def _settle(self, key: CorrelationKey) -> None:
        worker = self._where.pop(key, None)
        if worker is not None:
            self._outstanding[worker] = max(0, self._outstanding.get(worker, 0) - 1)
            if self._held:
                self._pump_soon()  # its slot goes to the longest-waiting call

    def _send_to(self, worker: str, frame: Frame, batches: dict[str, list[Frame]]) -> None:
        batches.setdefault(worker, []).append(frame)
        self._outstanding[worker] = self._outstanding.get(worker, 0) + 1
        self._where[frame.envelope.correlation_key] = worker

    def _send_batches(self, batches: dict[str, list[Frame]]) -> None:
        for worker, batch in batches.items():
            self._spawn(self._run(worker, batch))

    # -- held calls ------------------------------------------------------------------

    def _pump_soon(self) -> None:
        # Once per loop turn: the slots several answers free go out in one batch each.
        if not self._pump_due:
            self._pump_due = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        """Send held calls, oldest first, to workers with a free slot of this client's."""
        self._pump_due = False
        if not self._held:
            return
        membership = self._membership
        if membership is None:  # the membership could not be read: the router's path
            self._to_router(self._release_all())
            return
        batches: dict[str, list[Frame]] = {}
        routed: list[Frame] = []
        full: set[str] = set()
        for frame, pool in self._held.in_order():
            if pool in full:
                continue  # in order within a pool: none overtakes an older one
            worker = self._choose(membership, pool)
            if worker is None and self._slot_will_free(membership, pool):
                full.add(pool)
                continue
            self._held.take(frame.envelope.correlation_key)
            if worker is None:
                routed.append(frame)  # no worker left to wait for: the router's
            else:
                self._send_to(worker, frame, batches)
        self._send_batches(batches)
        if routed:
            self._to_router(routed)

    def _release_all(self) -> list[Frame]:
        """Every held call, in order, no longer held."""
        held = [frame for frame, _ in self._held.in_order()]
        for frame in held:
            self._held.take(frame.envelope.correlation_key)
        return held

    def _keep_ticking(self) -> None:
        if self._tick is None:
            loop = asyncio.get_running_loop()
            self._tick = loop.call_later(_HOLD_TICK_S, self._on_tick)

    def _on_tick(self) -> None:
        self._tick = None
        self._refresh()
        expired = self._held.expire(time.time())
        if expired:
            answering: asyncio.Future[None] = asyncio.ensure_future(
                self._hand_over(
                    [
                        error_reply(
                            frame,
                            BusErrorCode.DEADLINE_EXCEEDED,
                            f"deadline passed while queued for pool {pool!r}",
                        )
                        for frame, pool in expired
                    ]
                )
            )
            self._answering.add(answering)
            answering.add_done_callback(self._answering.discard)
        self._pump()
        self._tell_router()
        if self._held or self._reported or self._held.has_ended():
            self._keep_ticking()

    def _tell_router(self) -> None:
        if self._report_held is None:
            return
        now = time.monotonic()
        since = now - self._reported_at
        rows = self._held.rows()
        counts = {pool: count for pool, (count, _) in rows.items()}
        changed = counts != self._reported or self._held.has_ended()
        if (changed and since >= _HELD_REPORT_MIN_S) or (rows and since >= _HELD_KEEP_S):
            self._report_held(rows, self._held.take_ended())
            self._reported = counts
            self._reported_at = now

    async def _lost(self, worker: str, frames: list[Frame], exc: BaseException) -> None:
        logger.warning("worker %s was lost with %d direct call(s): %s", worker, len(frames), exc)
        # Before any slot frees: calls waiting here must not go to it meanwhile.
        self._lost_workers.add(worker)
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
            # waits here or goes to the router, marked as run once so the router's
            # retry bound counts that run.
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
