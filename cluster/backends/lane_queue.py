"""Calls a direct lane holds while every worker of their pool in its view is full.

Before, such a call went to the router, whose queue dispatched it when a slot freed: on
a saturated pool (a burst on CPU-bound tools) every call then paid the router's four Ray
transits instead of the lane's one socket round trip, and a direct attempt the full
worker bounced first. The lane now holds it here, in arrival order per pool, and sends
it to the first worker that frees one of this client's slots (:mod:`.ray_direct`).

The router must still see it: its lag is the autoscaler's signal. So the lane reports
what it holds per pool (how many, the oldest's age) and how held calls ended without a
worker (cancelled, past their deadline), and the router adds those to the pool's lag and
metrics (:meth:`actors.router.core.RouterCore.lane_held`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from actors.router.outcomes import CallOutcome, call_label
from transports.envelope import CorrelationKey
from transports.frame import Frame

__all__ = ["HeldEnd", "HeldRows", "LaneQueue"]

# Per pool: (calls held, the oldest one's age in s).
HeldRows = dict[str, tuple[int, float]]
# How a held call ended without reaching a worker: (pool, tool label, outcome).
HeldEnd = tuple[str, str, CallOutcome]


@dataclass(slots=True)
class _Held:
    frame: Frame
    pool: str
    since_s: float


class LaneQueue:
    """Held calls by arrival, bounded per pool; what they are, and how they ended."""

    def __init__(self, max_per_pool: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_per_pool = max_per_pool
        self._clock = clock
        self._held: dict[CorrelationKey, _Held] = {}  # insertion order is arrival order
        self._per_pool: Counter[str] = Counter()
        self._ended: list[HeldEnd] = []

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, key: CorrelationKey) -> bool:
        return key in self._held

    def holds_for(self, pool: str) -> bool:
        """Are calls of ``pool`` waiting? (A new one then waits behind them.)"""
        return self._per_pool[pool] > 0

    def has_room(self, pool: str) -> bool:
        return self._per_pool[pool] < self._max_per_pool

    def hold(self, frame: Frame, pool: str) -> None:
        self._held[frame.envelope.correlation_key] = _Held(frame, pool, self._clock())
        self._per_pool[pool] += 1

    def in_order(self) -> Iterator[tuple[Frame, str]]:
        """Every held call and its pool, oldest first (a snapshot: take or keep each)."""
        return iter([(held.frame, held.pool) for held in self._held.values()])

    def take(self, key: CorrelationKey) -> Frame | None:
        """Remove a call to send it on (to a worker or the router)."""
        held = self._held.pop(key, None)
        if held is None:
            return None
        self._per_pool[held.pool] -= 1
        if self._per_pool[held.pool] <= 0:
            del self._per_pool[held.pool]
        return held.frame

    def cancel(self, key: CorrelationKey) -> bool:
        """The caller gave up on a held call: it goes nowhere (the router's rule)."""
        held = self._held.get(key)
        if held is None:
            return False
        self._ended_as(held, CallOutcome.CANCELLED)
        self.take(key)
        return True

    def expire(self, wall_now_s: float) -> list[tuple[Frame, str]]:
        """Remove and return the calls whose deadline has passed, with their pools."""
        expired = [h for h in self._held.values() if h.frame.envelope.expired(wall_now_s)]
        for held in expired:
            self._ended_as(held, CallOutcome.TIMEOUT)
            self.take(held.frame.envelope.correlation_key)
        return [(held.frame, held.pool) for held in expired]

    def rows(self) -> HeldRows:
        now = self._clock()
        oldest: dict[str, float] = {}
        for held in self._held.values():  # the first of each pool is its oldest
            oldest.setdefault(held.pool, now - held.since_s)
        return {pool: (count, oldest[pool]) for pool, count in self._per_pool.items()}

    def has_ended(self) -> bool:
        return bool(self._ended)

    def take_ended(self) -> list[HeldEnd]:
        ended, self._ended = self._ended, []
        return ended

    def _ended_as(self, held: _Held, outcome: CallOutcome) -> None:
        envelope = held.frame.envelope
        self._ended.append((held.pool, call_label(envelope.method, envelope.name), outcome))
