"""What a Ray worker sends: answers to callers' endpoints, completions and direct-call
reports to the router, each coalesced per destination (see :mod:`actors.outbox`).

The worker core (:mod:`actors.worker.core`) talks to these ports only; the Ray actor
(:mod:`cluster.ray_actors.worker`) wires them to actor handles.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from actors.outbox import BUSY_INTERVAL_S, Outbox
from actors.router.core import Completion
from actors.worker.completions import CompletionReports, is_verdict
from actors.worker.direct import DirectCalls
from cluster.naming import HandleCache, actor_names
from transports.errors import BusError
from transports.frame import Frame

__all__ = ["RayWorkerPorts"]

logger = logging.getLogger(__name__)

# Direct-call reports to the router, at most 5 a second per worker under load: each is
# an actor call, and at 20 a second they cost B1's router 0.08 cores and each worker ~5 %
# of its CPU. 0.2 s old is still fresher than the autoscaler's reads (every 0.5 s); a
# worker bounces what it has no room for, whatever the router last heard.
_DIRECT_REPORT_INTERVAL_S = 0.2
# Sends of one batch to a restarting task store (2, 4, 8, 10, 10, ... s apart: ~100 s).
_TASK_RESENDS = 12


class _Reply(NamedTuple):
    """A frame for a caller's endpoint, and the completion it ends (if it is an answer)."""

    frame: Frame
    completion: Completion | None
    resends: int = 0


class RayWorkerPorts:
    def __init__(
        self,
        bus: str,
        actor_name: str,
        handles: HandleCache,
        *,
        pool: str,
        capacity: int,
        slow_call_s: float,
    ) -> None:
        self._router = actor_names.router(bus)
        self._actor_name = actor_name
        self._handles = handles
        # A call's answer travels with its completion: the router hears that the call
        # ended only once the answer reached the caller's endpoint. Told earlier, a
        # router whose worker then died would neither re-run nor fail the call, and its
        # caller would wait out its deadline for an answer lost with the worker.
        self.replies: Outbox[str, _Reply] = Outbox(
            self._send_replies,
            on_settled=self._replies_settled,
            on_failure=self._replies_failed,
            min_interval_s=BUSY_INTERVAL_S,
        )
        self._task_store = actor_names.tasks(bus)
        self.completions: Outbox[str, Completion] = Outbox(
            self._send_completions, min_interval_s=BUSY_INTERVAL_S
        )
        # Completions ride back on the answer to the router's next deliver; the outbox
        # above only carries those that waited too long or that the router waits for.
        self.reports = CompletionReports(
            self._send_alone, capacity=capacity, slow_call_s=slow_call_s
        )
        # Set with a backend whose workers take requests themselves (brokers): what the
        # server says about a call goes to the caller's topic or queue; requests to Ray
        # actors (raybus/...) still go to their actor.
        self.topic_sink: Callable[[str, Frame], None] | None = None
        # Calls clients send this worker directly (Ray): answered as return values, and
        # reported to the router in batches (actors.worker.direct).
        self.direct = DirectCalls()
        self.direct_open = True  # the pool's breaker, as the router last said: closed
        # The same, without this worker's own verdicts the router has yet to hear of: a
        # client's lane skips a worker whose pool's breaker is not closed (for a moment),
        # not one that merely waits for the router's answer about its last slow call.
        self.breaker_closed = True
        # Verdicts on the pool (faults, slow calls) among this worker's direct calls, and
        # how many of them the report in flight carries: see _direct_answered.
        self._slow_call_s = slow_call_s
        self._verdicts = 0
        self._verdicts_reported = 0
        self._waiting = 0
        self._pool = pool
        # An idle worker's first report leaves at once; under load they are coalesced.
        self._direct_reports: Outbox[str, None] = Outbox(
            self._send_direct_report,
            on_answer=self._direct_answered,
            min_interval_s=_DIRECT_REPORT_INTERVAL_S,
        )

    def report_direct(self) -> None:
        self._direct_reports.put(self._router, None)

    def waiting_changed(self, waiting: int) -> None:
        """Routed calls held for a slot (see WorkerCore): the router counts them queued."""
        self._waiting = waiting
        self.report_direct()

    def _send_direct_report(self, router: str, _: list[None]) -> Any:
        report = self.direct.take_report(self._pool, self._waiting)
        self._verdicts_reported = self._verdicts  # one report in flight at a time (Outbox)
        return self._handles.get(router).direct_ended.remote(self._actor_name, report)

    def _direct_answered(self, _: str, breaker: object) -> None:
        # An answer about a report that lacks a later verdict cannot say the breaker
        # survived it: direct calls wait (bounced to the router) for the next answer.
        self.breaker_closed = breaker == "closed"
        self.direct_open = self.breaker_closed and self._verdicts_reported == self._verdicts

    def _direct_ended(self, completion: Completion, answer: Frame | None) -> None:
        if is_verdict(completion, self._slow_call_s):
            # Closed until the router, told of it, answers: a direct call must not slip
            # past a breaker this verdict opens (its caller may have seen it open).
            self.direct_open = False
            self._verdicts += 1
        self.direct.ended(completion, answer)
        self.report_direct()

    def reply(self, destination: str, frame: Frame, completion: Completion | None = None) -> None:
        if self.direct.owns(frame.envelope.correlation_key):
            if completion is None:  # progress, a log: the answer must not overtake it
                self.direct.spoke(frame.envelope.correlation_key)
                self.replies.put(destination, _Reply(frame, None))
            elif self.direct.takes_answer(completion.key):
                self._direct_ended(completion, frame)
            else:  # ended once it reached the caller: see _replies_settled
                self.replies.put(destination, _Reply(frame, completion))
            return
        if self.topic_sink is not None and not destination.startswith("raybus/"):
            self.topic_sink(destination, frame)
            if completion is not None:
                self.reports.add(completion)
        else:
            self.replies.put(destination, _Reply(frame, completion))

    def completed(self, completion: Completion) -> None:
        if self.direct.owns(completion.key):
            self._direct_ended(completion, None)
        else:
            self.reports.add(completion)

    def _replies_settled(self, _: str, replies: list[_Reply]) -> None:
        # Accepted, or undeliverable (the caller's endpoint is gone): either way the
        # call is over for the router.
        for reply in replies:
            if reply.completion is not None:
                self.completed(reply.completion)

    def _replies_failed(self, destination: str, replies: list[_Reply], exc: BaseException) -> None:
        # Only the task store keeps what it is sent beyond its caller's life: a batch
        # lost while Ray restarts it (the calls in flight at its death fail) would leave
        # a task running until its deadline, so it is sent again. Any other caller that
        # died has nobody left to read the answer.
        if destination != self._task_store:
            return
        again = [_Reply(r.frame, None, r.resends + 1) for r in replies if r.resends < _TASK_RESENDS]
        if len(again) < len(replies):
            logger.warning("dropped %d message(s) for the task store: %s", len(replies), exc)
        if again:
            delay_s = min(2.0 ** again[0].resends, 10.0)
            asyncio.get_running_loop().call_later(delay_s, self._resend, destination, again)

    def _resend(self, destination: str, replies: list[_Reply]) -> None:
        for reply in replies:
            self.replies.put(destination, reply)

    def _send_alone(self, completions: list[Completion]) -> None:
        for completion in completions:
            self.completions.put(self._router, completion)

    def _send_replies(self, destination: str, replies: list[_Reply]) -> Any:
        try:
            handle = self._handles.get(destination)
        except BusError as exc:
            logger.warning("dropped %d message(s) for %s: %s", len(replies), destination, exc)
            return None
        return handle.deliver.remote([reply.frame for reply in replies])

    def _send_completions(self, router: str, completions: list[Completion]) -> Any:
        return self._handles.get(router).completed.remote(self._actor_name, completions)
