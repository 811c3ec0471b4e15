"""How a call's end and a pool's lag travel: a worker's :class:`Completion` reports a
call that ended to the router; :class:`PoolLag` is a pool's queue and workers as the
autoscaler reads them. Plain data, shared by the router, the workers and the clients.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.router.breaker import BreakerState
from actors.router.outcomes import CallOutcome
from transports.envelope import CorrelationKey
from transports.errors import BusErrorCode

__all__ = ["Completion", "DirectReport", "PoolLag"]


@dataclass(frozen=True, slots=True)
class Completion:
    """A worker's report that a call ended.

    ``failed`` means a pool fault (the server crashed or answered an internal error), not
    a tool error. ``abandoned`` means the call ended without a verdict on the pool: the
    caller cancelled it or its deadline passed. An abandoned call says nothing about the
    pool's health (a caller giving up on a long tool is not the server failing), so the
    breaker does not count it.

    ``error_code`` is the JSON-RPC error the caller got (None for a result) and
    ``tool_error`` says the result had ``isError``: together they make :attr:`outcome`.
    """

    key: CorrelationKey
    failed: bool
    duration_s: float
    abandoned: bool = False
    error_code: int | None = None
    tool_error: bool = False

    def __reduce__(self) -> tuple[type[Completion], tuple[object, ...]]:
        # Crosses Ray by the batch: the constructor loads faster than slots state.
        fields = (self.key, self.failed, self.duration_s, self.abandoned)
        return (type(self), (*fields, self.error_code, self.tool_error))

    @property
    def outcome(self) -> CallOutcome:
        if self.failed:
            return CallOutcome.FAULT
        if self.abandoned:
            if self.error_code == BusErrorCode.DEADLINE_EXCEEDED:
                return CallOutcome.TIMEOUT
            return CallOutcome.CANCELLED
        if self.error_code is not None:
            return CallOutcome.ERROR
        return CallOutcome.TOOL_ERROR if self.tool_error else CallOutcome.OK


@dataclass(frozen=True, slots=True)
class PoolLag:
    """A pool's queue and workers.

    ``completed`` counts the calls its workers finished so far, cancelled or expired ones
    aside (a cumulative counter: the autoscaler reads calls/s from its differences).
    """

    pool: str
    queued: int
    oldest_age_s: float
    in_flight: int
    workers: int
    capacity: int
    breaker: BreakerState
    completed: int


@dataclass(frozen=True, slots=True)
class DirectReport:
    """The router's news of direct calls: how many run now, and those that ended (with
    the label each is counted under).

    ``waiting``: calls the router sent that the worker holds for a slot, because direct
    calls took the slots first (:class:`~actors.worker.core.WorkerCore`); the router
    counts them as queued.
    """

    pool: str
    in_flight: int
    ended: list[tuple[str, Completion]]
    waiting: int = 0

    def __reduce__(self) -> tuple[type[DirectReport], tuple[object, ...]]:
        return (type(self), (self.pool, self.in_flight, self.ended, self.waiting))
