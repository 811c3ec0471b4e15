"""A circuit breaker: closed / open / half-open on failure and slow-call rates.

Pure logic with an injected clock. The router keeps one per pool and asks
:meth:`CircuitBreaker.try_acquire` before dispatching, then reports each outcome. While
open, nothing reaches the pool; after ``open_cooldown_s`` a limited number of probes go
through (half-open); a probe that does not finish within ``probe_timeout_s`` counts as a
failure, so a hanging probe cannot keep the breaker half-open forever.

Only the pool's own verdicts count: a call its caller cancelled or let run past its
deadline is released (:meth:`~CircuitBreaker.release`), never recorded, so many callers giving up
on a long tool cannot open the breaker of a healthy pool.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BreakerConfig", "BreakerState", "CircuitBreaker", "Outcome"]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerConfig(BaseModel):
    """Thresholds; rates are fractions of the calls in the sliding window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: float = Field(10.0, gt=0)
    minimum_calls: int = Field(10, ge=1)
    failure_rate_threshold: float = Field(0.5, gt=0, le=1)
    slow_call_threshold_s: float = Field(30.0, gt=0)
    slow_call_rate_threshold: float = Field(1.0, gt=0, le=1)
    open_cooldown_s: float = Field(5.0, gt=0)
    half_open_max_calls: int = Field(1, ge=1)
    probe_timeout_s: float = Field(10.0, gt=0)


@dataclass(frozen=True, slots=True)
class Outcome:
    at_s: float
    failed: bool
    slow: bool


class CircuitBreaker:
    """One pool's breaker. Not thread-safe: owned by one actor's event loop."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        clock: Clock = time.monotonic,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._on_open = on_open  # called each time it opens
        self._state = BreakerState.CLOSED
        self._window: deque[Outcome] = deque()
        # Kept with the window: a completion costs O(1), not a pass over the window
        # (which holds every call of the last window_s: thousands under load).
        self._failures_in_window = 0
        self._slow_in_window = 0
        self._opened_at_s = 0.0
        self._probes: dict[object, float] = {}  # probe token -> started at
        self.transitions = 0

    @property
    def state(self) -> BreakerState:
        self._advance()
        return self._state

    def try_acquire(self, token: object) -> bool:
        """May a call identified by ``token`` go to the pool now?"""
        self._advance()
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            return False
        if len(self._probes) >= self.config.half_open_max_calls:
            return False
        self._probes[token] = self._clock()
        return True

    def record(self, token: object, *, failed: bool, duration_s: float) -> None:
        """Report how a call that was let through ended."""
        now = self._clock()
        slow = duration_s >= self.config.slow_call_threshold_s
        if self._state is BreakerState.HALF_OPEN:
            if self._probes.pop(token, None) is None:
                return  # a call admitted before the breaker opened: it says nothing new
            if failed or slow:
                self._open(now, "probe failed" if failed else "probe was slow")
            elif not self._probes:
                self._close()
            return
        if self._state is BreakerState.OPEN:
            return
        self._window.append(Outcome(now, failed, slow))
        self._failures_in_window += failed
        self._slow_in_window += slow
        self._evaluate(now)

    def release(self, token: object) -> None:
        """A call that was admitted but ended without a verdict on the pool.

        It never reached the pool, or its caller cancelled it or let its deadline pass:
        it frees a half-open probe slot and is not counted as a failure or a slow call.
        """
        self._probes.pop(token, None)

    def _advance(self) -> None:
        now = self._clock()
        if (
            self._state is BreakerState.OPEN
            and now - self._opened_at_s >= self.config.open_cooldown_s
        ):
            self._set(BreakerState.HALF_OPEN, "cooldown over")
            self._probes.clear()
        elif self._state is BreakerState.HALF_OPEN:
            hung = [
                t
                for t, started in self._probes.items()
                if now - started >= self.config.probe_timeout_s
            ]
            if hung:
                self._open(now, "probe timed out")

    def _evaluate(self, now: float) -> None:
        horizon = now - self.config.window_s
        while self._window and self._window[0].at_s < horizon:
            gone = self._window.popleft()
            self._failures_in_window -= gone.failed
            self._slow_in_window -= gone.slow
        calls = len(self._window)
        if calls < self.config.minimum_calls:
            return
        failures = self._failures_in_window
        slow = self._slow_in_window
        if failures / calls >= self.config.failure_rate_threshold:
            self._open(now, f"failure rate {failures}/{calls}")
        elif slow / calls >= self.config.slow_call_rate_threshold:
            self._open(now, f"slow-call rate {slow}/{calls}")

    def _open(self, now: float, reason: str) -> None:
        self._opened_at_s = now
        self._probes.clear()
        self._clear_window()
        self._set(BreakerState.OPEN, reason)

    def _close(self) -> None:
        self._clear_window()
        self._set(BreakerState.CLOSED, "probe succeeded")

    def _clear_window(self) -> None:
        self._window.clear()
        self._failures_in_window = self._slow_in_window = 0

    def _set(self, state: BreakerState, reason: str) -> None:
        if state is not self._state:
            logger.info("breaker %s: %s -> %s (%s)", self.name, self._state, state, reason)
            self._state = state
            self.transitions += 1
            if state is BreakerState.OPEN and self._on_open is not None:
                self._on_open()
