"""Calls a client sent straight to this worker, answered as the call's return value.

On Ray, a client (a driver's ``BusClient``, a gateway replica) may send a ``tools/call``
to a worker of the pool itself instead of through the router: one actor call there and
the answer back as its return, where the router's path costs four transits (client ->
router -> worker -> the caller's endpoint -> the caller). This is the worker's half.

* A worker takes such a call only while it has a free slot, is not draining, and the
  router last said its pool's breaker is closed; the rest go back to the client
  (``bounced``), which sends them through the router, whose queue stays the lag signal.
* A call's answer is held for the return. If the call first sent other frames (progress,
  logs), its answer follows them the ordinary way, so it cannot overtake them, and the
  return only says it was delivered.
* A batch returns once its calls ended, or once none ended for a moment: calls still
  running are named in the return and the client collects them with a next call.
  Every answer thus rides on a return, so a worker dying mid-call fails that call at
  the client, which knows which of its calls were lost.
* The router never sees these calls, so their ends (and how many run) are reported to it
  in batches: its metrics, breaker, lag and balancing count them as their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from actors.replies import error_reply
from actors.router.completion import DirectReport
from actors.router.core import Completion
from actors.router.outcomes import call_label
from transports.envelope import CorrelationKey
from transports.errors import INVALID_REQUEST
from transports.frame import Frame

__all__ = ["DirectCalls", "DirectOutcome"]

# After a batch's first answer, the return waits while its other calls keep ending, each
# within this of the one before: a batch of quick calls comes back whole, while a slow
# call does not hold the quick ones back (it is collected by a next call instead).
HOLD_AFTER_FIRST_S = 0.002
# Answers of ended calls no client came to collect, kept at most (see _forget_uncollected).
_MAX_UNCOLLECTED = 10_000


@dataclass(frozen=True, slots=True)
class DirectOutcome:
    """What a direct call (or a collect) returns: answers, refusals, calls still running.

    ``answers``: the answers of ended calls that did not travel the ordinary way.
    ``bounced``: calls this worker did not take (send them through the router).
    ``running``: keys of taken calls not yet ended (collect them).
    ``closed``: the worker takes no direct calls for now (its pool's breaker is not
    closed, it drains or has not gone live); False: it bounced calls for want of a slot,
    or while the router hears of a verdict of its own (a moment).
    """

    answers: list[Frame]
    bounced: list[Frame] = field(default_factory=list)
    running: list[CorrelationKey] = field(default_factory=list)
    closed: bool = False

    def __reduce__(self) -> tuple[type[DirectOutcome], tuple[object, ...]]:
        return (type(self), (self.answers, self.bounced, self.running, self.closed))


class DirectCalls:
    """The worker's book of direct calls: their pending answers and what to report."""

    def __init__(self) -> None:
        self._answers: dict[CorrelationKey, asyncio.Future[Frame | None]] = {}
        self._labels: dict[CorrelationKey, str] = {}
        self._spoke: set[CorrelationKey] = set()
        self._ended: list[tuple[str, Completion]] = []
        self.ever = False  # has this worker taken a direct call (see the drain)

    @property
    def in_flight(self) -> int:
        return len(self._labels)

    def owns(self, key: CorrelationKey) -> bool:
        return key in self._labels

    def begin(self, frames: Iterable[Frame]) -> tuple[list[Frame], list[Frame]]:
        """Book ``frames``; returns those to serve, and the refusals of any whose key is
        already running here (the router refuses a request id in flight the same way;
        serving it would hand the first call's waiter the second one's answer)."""
        loop = asyncio.get_running_loop()
        self._forget_uncollected()
        accepted: list[Frame] = []
        refused: list[Frame] = []
        for frame in frames:
            envelope = frame.envelope
            key = envelope.correlation_key
            if key in self._labels:
                reason = f"request id {envelope.request_id!r} is already in flight"
                refused.append(error_reply(frame, INVALID_REQUEST, reason))
                continue
            self._labels[key] = call_label(envelope.method, envelope.name)
            self._answers[key] = loop.create_future()
            accepted.append(frame)
        self.ever = True
        return accepted, refused

    def spoke(self, key: CorrelationKey) -> None:
        """The call sent a frame of its own (it went the ordinary way)."""
        self._spoke.add(key)

    def takes_answer(self, key: CorrelationKey) -> bool:
        """Will the return carry this call's answer (else it goes the ordinary way)?"""
        return key not in self._spoke

    def ended(self, completion: Completion, answer: Frame | None) -> None:
        """The call ended; ``answer`` rides on the return (None: delivered otherwise, or
        nothing to deliver, as for a cancelled call)."""
        key = completion.key
        label = self._labels.pop(key, None)
        if label is None:
            return
        self._spoke.discard(key)
        self._ended.append((label, completion))
        future = self._answers.get(key)
        if future is not None and not future.done():
            future.set_result(answer)

    def take_report(self, pool: str, waiting: int) -> DirectReport:
        ended, self._ended = self._ended, []
        return DirectReport(pool, self.in_flight, ended, waiting)

    async def collect(self, keys: list[CorrelationKey]) -> DirectOutcome:
        """Wait for the first of ``keys`` to end, then for the rest while they keep ending."""
        futures = [self._answers[key] for key in keys if key in self._answers]
        if not futures:
            return DirectOutcome([])
        _, pending = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        while pending:  # more keep ending: a busy batch returns whole, in one call
            done, pending = await asyncio.wait(
                pending, timeout=HOLD_AFTER_FIRST_S, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
        answers: list[Frame] = []
        running: list[CorrelationKey] = []
        for key in keys:
            future = self._answers.get(key)
            if future is None:
                continue
            if future.done():
                del self._answers[key]
                answer = future.result()
                if answer is not None:
                    answers.append(answer)
            else:
                running.append(key)
        return DirectOutcome(answers, running=running)

    def _forget_uncollected(self) -> None:
        # A client that closed or died never collects its calls' answers: past a bound,
        # the oldest of those (kept in insertion order) are let go.
        excess = len(self._answers) - self.in_flight - _MAX_UNCOLLECTED
        if excess <= 0:
            return
        for key in [k for k, f in self._answers.items() if f.done()][:excess]:
            del self._answers[key]
