"""The router: names -> pools, a bounded queue per pool, load balancing, deadlines.

Pure logic driven by the router actor (``cluster``) and by unit tests with fakes. Calls
arrive in batches (:meth:`RouterCore.submit`); each is routed from its envelope (method
and name) without decoding the body, queued per pool, and dispatched to the workers with
free slots (least outstanding or power of two choices), one ``deliver`` batch per worker
per turn. The queue's depth and oldest age are the pool's lag.

Every call gets exactly one terminal outcome: the worker's response, or an error the
router sends itself (unknown name, queue full, breaker open, deadline passed while
queued, worker lost). Calls whose method is safe to repeat are re-queued once when their
worker is lost; others end with ``OUTCOME_UNKNOWN`` rather than risk running twice.

Each call's end is counted for the metrics port (:class:`RouterMetrics`) as a
:class:`~actors.router.outcomes.CallOutcome`, tallied per inbound batch: the port is
called once per ``submit`` / ``completed`` / ``tick``, never once per call.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from actors.discovery.registry import Membership, ServerStatus
from actors.replies import breaker_open_reply, error_reply
from actors.router.balancing import BalancingPolicy, balancer_for
from actors.router.book import PoolBook, RoutedCall, WorkerSlots
from actors.router.breaker import BreakerConfig, BreakerState, CircuitBreaker
from actors.router.completion import Completion, DirectReport, PoolLag
from actors.router.lanes import HeldByLanes
from actors.router.outcomes import UNROUTED, CallOutcome, CallTally, call_label
from actors.router.overdue import OverdueWatch
from actors.router.regions import RegionPolicy
from actors.router.routing import attempts_made, pool_for, retry_safe, tried_on
from actors.tracing import SpanKind, envelope_hop
from transports.envelope import CorrelationKey
from transports.errors import INVALID_REQUEST, BusErrorCode
from transports.frame import Frame

__all__ = ["Completion", "PoolLag", "RouterConfig", "RouterCore", "RouterMetrics", "RouterPorts"]

logger = logging.getLogger(__name__)


class RouterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_pending_per_pool: int = Field(10_000, ge=1)
    balancing: BalancingPolicy = BalancingPolicy.LEAST_OUTSTANDING
    breaker: BreakerConfig = BreakerConfig()
    max_retries_when_safe: int = Field(1, ge=0)
    # How long after a call's deadline the router answers for a worker that has not.
    overdue_grace_s: float = Field(2.0, gt=0)
    # Region-aware routing (README "Regions"); None: labels do not route.
    regions: RegionPolicy | None = None
    # Ray backend: clients send tools/call straight to a worker with a free slot, the
    # answer as the call's return (cluster.backends.ray_direct); the rest come here.
    direct_calls: bool = True


class RouterPorts(Protocol):
    """How the router reaches other actors (Ray handles in production, fakes in tests)."""

    def deliver(self, worker: str, frames: list[Frame]) -> None: ...

    def cancel(self, worker: str, keys: list[CorrelationKey]) -> None: ...

    def reply(self, frames: list[Frame]) -> None: ...

    def breaker_opened(self, worker: str) -> None: ...


class RouterMetrics(Protocol):
    """Where the router reports how calls ended: one tally per inbound batch."""

    def calls_ended(self, tally: CallTally) -> None: ...


class _NoMetrics:
    def calls_ended(self, tally: CallTally) -> None:
        pass


def _is_task(frame: Frame) -> bool:
    return any(name == "task" for name, _ in frame.envelope.attributes)


class RouterCore:
    def __init__(
        self,
        config: RouterConfig,
        ports: RouterPorts,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        metrics: RouterMetrics | None = None,
    ) -> None:
        self.config = config
        self._ports = ports
        self._metrics = metrics or _NoMetrics()
        self._tally = CallTally()
        self._clock = clock
        self._wall_clock = wall_clock
        self._pools: dict[str, PoolBook] = {}
        self._calls: dict[CorrelationKey, RoutedCall] = {}
        self._membership: Membership | None = None
        self._retired: set[str] = set()
        self._overdue = OverdueWatch(config.overdue_grace_s)
        self._held_by_lanes = HeldByLanes()
        self._started_at = clock()

    # -- inbound ---------------------------------------------------------------------

    def submit(self, frames: list[Frame]) -> None:
        """Route and queue a batch of request frames; rejections are replied at once."""
        rejected: list[Frame] = []
        touched: set[str] = set()
        tally = self._tally
        now = self._clock()
        wall_now = self._wall_clock()
        for frame in frames:
            envelope = frame.envelope
            key = envelope.correlation_key
            if key in self._calls:
                tally.add(UNROUTED, UNROUTED, CallOutcome.INVALID)
                rejected.append(
                    error_reply(
                        frame,
                        INVALID_REQUEST,
                        f"request id {envelope.request_id!r} is already in flight",
                    )
                )
                continue
            if envelope.expired(wall_now):
                tally.add(UNROUTED, UNROUTED, CallOutcome.TIMEOUT)
                rejected.append(
                    error_reply(
                        frame, BusErrorCode.DEADLINE_EXCEEDED, "deadline passed before routing"
                    )
                )
                continue
            routed = self._route(frame)
            if isinstance(routed, Frame):
                tally.add(UNROUTED, UNROUTED, CallOutcome.UNROUTABLE)
                rejected.append(routed)
                continue
            pool, retry_safe = routed
            tool = call_label(envelope.method, envelope.name)
            if pool.breaker.state is BreakerState.OPEN:
                tally.add(pool.name, tool, CallOutcome.CIRCUIT_OPEN)
                rejected.append(self._breaker_open(frame, pool))
                continue
            hop = envelope_hop(envelope, SpanKind.INTERNAL, prefix="route ", extra=pool.span_extra)
            # The worker's span is a child of the router's (when tracing is on).
            stamped = hop.stamped(envelope)
            if stamped is not envelope:
                frame = Frame(stamped, frame.body)
            attempts = attempts_made(frame)
            call = RoutedCall(frame, pool.name, tool, now, retry_safe, attempts, hop=hop)
            call.lost_on = tried_on(frame)
            self._calls[key] = call
            pool.queue.append(call)
            touched.add(pool.name)
        for name in touched:
            pool = self._pools[name]
            self._dispatch(pool)
            # The cap applies to what still waits after dispatch; before this batch the
            # queue was within it, so only this batch's newest calls are turned away.
            while len(pool.queue) > self.config.max_pending_per_pool:
                call = pool.queue.pop()
                del self._calls[call.frame.envelope.correlation_key]
                tally.add(name, call.tool, CallOutcome.OVERLOADED)
                call.left_queue(str(BusErrorCode.OVERLOADED.value))
                rejected.append(
                    error_reply(
                        call.frame,
                        BusErrorCode.OVERLOADED,
                        f"pool {name!r} has {len(pool.queue)} calls waiting; retry later",
                        {"retryAfterSeconds": 1},
                    )
                )
        if rejected:
            self._ports.reply(rejected)
        self._report()

    def cancel(self, keys: list[CorrelationKey]) -> None:
        """Drop queued calls; forward the cancellation for calls already on a worker."""
        by_worker: dict[str, list[CorrelationKey]] = {}
        for key in keys:
            call = self._calls.get(key)
            if call is None:
                continue
            if call.worker is None:
                del self._calls[key]
                self._pools[call.pool].queue.remove(call)
                self._tally.add(call.pool, call.tool, CallOutcome.CANCELLED)
                call.left_queue(str(BusErrorCode.CANCELLED.value))
            else:
                by_worker.setdefault(call.worker, []).append(key)
        for worker, worker_keys in by_worker.items():
            self._ports.cancel(worker, worker_keys)
        self._report()

    def completed(self, actor_name: str, completions: list[Completion]) -> None:
        """A worker finished calls: free their slots, feed the breaker, dispatch more."""
        pools: set[str] = set()
        tally = self._tally
        now = self._clock()
        for done in completions:
            call = self._calls.get(done.key)
            if call is None or call.worker != actor_name:
                # A late word from a worker the call no longer runs on (it was lost and
                # the call went elsewhere): the call stays the new worker's to finish.
                continue
            del self._calls[done.key]
            pool = self._pools.get(call.pool)
            if pool is None:
                continue
            worker = pool.workers.get(actor_name)
            if worker is not None:
                worker.outstanding.pop(done.key, None)
            pools.add(call.pool)
            if call.answered:  # counted and answered when it went overdue: a failure
                pool.breaker.record(done.key, failed=True, duration_s=done.duration_s)
                continue
            if done.abandoned:
                pool.breaker.release(done.key)
            else:
                pool.completed += 1
                # A task runs long by design: its length says nothing of the pool's health
                # (a pool of 20-minute tasks would otherwise open its breaker on them).
                duration_s = 0.0 if _is_task(call.frame) else done.duration_s
                pool.breaker.record(done.key, failed=done.failed, duration_s=duration_s)
            outcome = done.outcome
            tally.add(call.pool, call.tool, outcome)
            if outcome is not CallOutcome.CANCELLED:  # a caller giving up times nothing
                tally.latency(call.pool, now - call.queued_at_s)
        for name in pools:
            self._dispatch(self._pools[name])
        self._report()

    def direct_ended(self, actor_name: str, report: DirectReport) -> BreakerState:
        """A worker's news of calls clients sent it directly (:mod:`actors.worker.direct`):
        counted as the router's own for lag, balancing, breaker and metrics. Returns the
        pool's breaker state: the worker takes direct calls only while it is closed."""
        pool = self._pools.get(report.pool)
        if pool is None:
            return BreakerState.CLOSED
        worker = pool.workers.get(actor_name)
        if worker is not None:
            worker.direct = report.in_flight
            worker.waiting = min(report.waiting, len(worker.outstanding))
        for tool, done in report.ended:
            if not done.abandoned:
                pool.completed += 1
                pool.breaker.record(done.key, failed=done.failed, duration_s=done.duration_s)
            outcome = done.outcome
            self._tally.add(pool.name, tool, outcome)
            if outcome is not CallOutcome.CANCELLED:
                self._tally.latency(pool.name, done.duration_s)
        self._dispatch(pool)
        self._report()
        return pool.breaker.state

    def lane_held(
        self, lane: str, rows: dict[str, tuple[int, float]], ended: list[tuple[str, str, str]]
    ) -> None:
        """What a client's direct lane holds for pools' slots (cluster.backends.lane_queue),
        and how held calls ended there (cancelled, expired): the router's own, for lag
        and metrics."""
        self._held_by_lanes.report(lane, rows, self._clock())
        for pool, tool, outcome in ended:
            self._tally.add(pool, tool, CallOutcome(outcome))
        self._report()

    def delivery_failed(self, actor_name: str, frames: list[Frame], reason: str) -> None:
        """A deliver call to ``actor_name`` failed: the worker is gone."""
        logger.warning("delivery to %s failed (%s): treating it as lost", actor_name, reason)
        self._lose_worker(actor_name, reason)
        self._report()

    # -- membership ------------------------------------------------------------------

    def apply_membership(self, membership: Membership) -> None:
        """Adopt a discovery snapshot: add new workers, lose the ones that vanished."""
        self._membership = membership
        seen: set[str] = set()
        for pool_name, infos in membership.workers.items():
            pool = self._pool(pool_name)
            for info in infos:
                seen.add(info.actor_name)
                worker = pool.workers.get(info.actor_name)
                if worker is None:
                    worker = pool.workers[info.actor_name] = WorkerSlots(
                        info.server_id, info.actor_name, info.capacity
                    )
                    if pool.breaker.state is not BreakerState.CLOSED:
                        self._ports.breaker_opened(info.actor_name)  # it starts closed
                worker.capacity = info.capacity
                worker.retired = (
                    info.actor_name in self._retired or info.status is ServerStatus.DRAINING
                )
                if not worker.retired:
                    pool.routable_at = self._clock()
        for pool in self._pools.values():
            for actor_name in [a for a in pool.workers if a not in seen]:
                self._lose_worker(actor_name, "no longer in discovery")
        for pool in list(self._pools.values()):
            self._dispatch(pool)
        self._report()

    def retire(self, actor_name: str) -> int:
        """Stop sending to a worker (before draining it). Returns the frames it was sent."""
        self._retired.add(actor_name)
        for pool in self._pools.values():
            worker = pool.workers.get(actor_name)
            if worker is not None:
                worker.retired = True
                return worker.frames_sent
        return 0

    def forget_worker(self, actor_name: str) -> None:
        """The worker exited after a clean drain."""
        self._lose_worker(actor_name, "exited")
        self._retired.discard(actor_name)
        self._report()

    # -- time ------------------------------------------------------------------------

    def tick(self) -> None:
        """Expire queued calls past their deadline; let breakers time out probes."""
        wall_now = self._wall_clock()
        expired: list[Frame] = []
        for pool in self._pools.values():
            if pool.queue and any(c.frame.envelope.expired(wall_now) for c in pool.queue):
                keep: deque[RoutedCall] = deque()
                for call in pool.queue:
                    if call.frame.envelope.expired(wall_now):
                        del self._calls[call.frame.envelope.correlation_key]
                        self._tally.add(pool.name, call.tool, CallOutcome.TIMEOUT)
                        call.left_queue(str(BusErrorCode.DEADLINE_EXCEEDED.value))
                        expired.append(
                            error_reply(
                                call.frame,
                                BusErrorCode.DEADLINE_EXCEEDED,
                                f"deadline passed while queued for pool {pool.name!r}",
                            )
                        )
                    else:
                        keep.append(call)
                pool.queue = keep
            _ = pool.breaker.state  # advances open -> half-open and times out probes
            if any(not w.retired for w in pool.workers.values()):
                pool.routable_at = self._clock()
            self._dispatch(pool)
        expired.extend(self._answer_overdue(wall_now))
        if expired:
            self._ports.reply(expired)
        self._report()

    def _answer_overdue(self, wall_now: float) -> list[Frame]:
        """Answer the calls workers hold past deadline + grace, and cancel them there."""
        answers: list[Frame] = []
        cancels: dict[str, list[CorrelationKey]] = {}
        for key in self._overdue.due(wall_now):
            call = self._calls.get(key)
            if call is None or call.worker is None or call.answered:
                continue  # finished, back in the queue (its expiry covers it), or answered
            call.answered = True
            self._tally.add(call.pool, call.tool, CallOutcome.TIMEOUT)
            answers.append(
                error_reply(
                    call.frame,
                    BusErrorCode.DEADLINE_EXCEEDED,
                    f"worker {call.worker} did not answer by the deadline; the call may have run",
                )
            )
            cancels.setdefault(call.worker, []).append(key)
        if answers:
            logger.warning("answered %d overdue call(s) for their workers", len(answers))
        for worker, keys in cancels.items():
            self._ports.cancel(worker, keys)
        return answers

    # -- views -----------------------------------------------------------------------

    def lag(self) -> dict[str, PoolLag]:
        now = self._clock()
        held = self._held_by_lanes.per_pool(now)
        return {
            name: PoolLag(
                pool=name,
                queued=len(pool.queue)
                + sum(w.waiting for w in pool.workers.values())
                + held.get(name, (0, 0.0))[0],
                oldest_age_s=max(
                    now - pool.queue[0].queued_at_s if pool.queue else 0.0,
                    held.get(name, (0, 0.0))[1],
                ),
                in_flight=sum(w.outstanding_count - w.waiting for w in pool.workers.values()),
                workers=sum(1 for w in pool.workers.values() if not w.retired),
                capacity=sum(w.capacity for w in pool.workers.values() if not w.retired),
                breaker=pool.breaker.state,
                completed=pool.completed,
            )
            for name, pool in self._pools.items()
        }

    def outstanding_by_worker(self) -> dict[str, int]:
        return {a: w.outstanding_count for p in self._pools.values() for a, w in p.workers.items()}

    def wants_prompt_completions(self, actor_name: str) -> bool:
        """Should this worker report each call's end at once, not with its next answer?

        Yes while its pool's breaker is not closed: the breaker waits for those verdicts
        (a probe's success closes it), and calls are few then.
        """
        for pool in self._pools.values():
            if actor_name in pool.workers:
                return pool.breaker.state is not BreakerState.CLOSED
        return False

    def breaker_states(self) -> dict[str, BreakerState]:
        """Each pool's breaker now (advancing timed transitions)."""
        return {name: pool.breaker.state for name, pool in self._pools.items()}

    # -- internals -------------------------------------------------------------------

    def _report(self) -> None:
        """Hand this batch's tally to the metrics port (one call, whatever the batch)."""
        if self._tally:
            tally, self._tally = self._tally, CallTally()
            self._metrics.calls_ended(tally)

    def _pool(self, name: str) -> PoolBook:
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = PoolBook(
                name,
                CircuitBreaker(
                    name, self.config.breaker, self._clock, lambda: self._breaker_opened(name)
                ),
                balancer_for(self.config.balancing),
                routable_at=self._started_at,
            )
        return pool

    def _breaker_opened(self, name: str) -> None:
        """A worker takes direct calls only while its pool's breaker is closed: tell each
        at once, not at its next report (one that takes only direct calls, or calls held
        in a client's lane, would otherwise run them past an open breaker meanwhile)."""
        for worker in self._pools[name].workers:
            self._ports.breaker_opened(worker)

    def _route(self, frame: Frame) -> tuple[PoolBook, bool] | Frame:
        target = pool_for(self._membership, frame, self.config.regions, self._available)
        if isinstance(target, Frame):
            return target
        method, name = frame.envelope.method or "", frame.envelope.name or ""
        return self._pool(target), retry_safe(self._membership, method, target, name)

    def _available(self, name: str) -> bool:
        """Can ``name`` serve a regioned call now (README "Regions")? Its breaker is not
        open, and it sleeps at min_workers 0 or had a routable worker lately."""
        pool, regions = self._pools.get(name), self.config.regions
        if pool is not None and pool.breaker.state is BreakerState.OPEN:
            return False
        if regions is None or name in regions.waking_pools:
            return True
        routable_at = pool.routable_at if pool is not None else self._started_at
        return self._clock() - routable_at < regions.failover_after_s

    def _breaker_open(self, frame: Frame, pool: PoolBook) -> Frame:
        return breaker_open_reply(frame, pool.name, pool.breaker.config.open_cooldown_s)

    def _dispatch(self, pool: PoolBook) -> None:
        if not pool.queue:
            return
        batches: dict[str, list[Frame]] = {}
        rejected: list[Frame] = []
        while pool.queue:
            candidates = [w for w in pool.workers.values() if w.free > 0]
            if not candidates:
                break
            call = pool.queue[0]
            candidates = call.eligible(candidates, len(pool.workers))
            if not candidates:
                break  # in arrival order: it waits for another worker to free a slot
            key = call.frame.envelope.correlation_key
            if not pool.breaker.try_acquire(key):
                if pool.breaker.state is BreakerState.OPEN:
                    pool.queue.popleft()
                    del self._calls[key]
                    self._tally.add(pool.name, call.tool, CallOutcome.CIRCUIT_OPEN)
                    call.left_queue(str(BusErrorCode.CIRCUIT_OPEN.value))
                    rejected.append(self._breaker_open(call.frame, pool))
                    continue
                break  # half-open with its probes out: wait for them
            pool.queue.popleft()
            worker = pool.balancer.choose(candidates)
            call.worker = worker.actor_name
            call.left_queue()
            call.attempts += 1
            worker.outstanding[key] = call
            self._overdue.watch(call.frame.envelope.deadline_unix_s, key)
            batches.setdefault(worker.actor_name, []).append(call.frame)
        for actor_name, frames in batches.items():
            pool.workers[actor_name].frames_sent += len(frames)
            self._ports.deliver(actor_name, frames)
        if rejected:
            self._ports.reply(rejected)

    def _lose_worker(self, actor_name: str, reason: str) -> None:
        for pool in self._pools.values():
            worker = pool.workers.pop(actor_name, None)
            if worker is None:
                continue
            lost: list[Frame] = []
            requeue: list[RoutedCall] = []
            for key, call in worker.outstanding.items():
                pool.breaker.record(key, failed=True, duration_s=0.0)
                if call.answered:  # its caller already has the router's answer
                    self._calls.pop(key, None)
                elif call.retry_safe and call.attempts <= self.config.max_retries_when_safe:
                    call.worker = None
                    requeue.append(call)
                else:
                    self._calls.pop(key, None)
                    self._tally.add(pool.name, call.tool, CallOutcome.LOST)
                    lost.append(
                        error_reply(
                            call.frame,
                            BusErrorCode.OUTCOME_UNKNOWN,
                            f"worker {actor_name} was lost ({reason}); the call may have run",
                        )
                    )
            pool.queue.extendleft(reversed(requeue))
            if lost:
                self._ports.reply(lost)
            if worker.outstanding:
                logger.warning(
                    "worker %s lost with %d call(s): %d re-queued",
                    actor_name,
                    len(worker.outstanding),
                    len(requeue),
                )
            self._dispatch(pool)
