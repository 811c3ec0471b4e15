"""What a trigger counts, for ``raybus status``: outcomes, retries, and its recent rate.

Pure, with an injected clock. The rate is records settled per second over the last
:data:`RATE_WINDOW_S` seconds, kept as one counter per whole second (memory bounded by the
window, whatever the rate).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from enum import StrEnum
from typing import Any

__all__ = ["RATE_WINDOW_S", "Stage", "TriggerStats"]

RATE_WINDOW_S = 10


class Stage(StrEnum):
    """Where a record failed, as its dead letter says (``raybus-error-stage``)."""

    MAPPING = "mapping"  # the template or map: callable could not build arguments
    CALL = "call"  # the call failed (JSON-RPC error, isError result, retries exhausted)
    OUTPUT = "output"  # the result could not be written to the output


class TriggerStats:
    """Counters of one trigger replica; read with :meth:`snapshot`."""

    def __init__(self, clock: Callable[[], float], max_in_flight: int) -> None:
        self._clock = clock
        self.max_in_flight = max_in_flight
        self.consumed = 0
        self.ok = 0
        self.skipped = 0
        self.retried = 0
        self.dead_lettered: dict[Stage, int] = dict.fromkeys(Stage, 0)
        self.in_flight = 0
        self.last_error: str | None = None
        self.stalled: str | None = None  # why a write keeps failing (None: it does not)
        self._seconds: deque[tuple[int, int]] = deque()  # (whole second, records settled)

    def settled(self) -> None:
        """One record acknowledged (written or dead-lettered, or skipped)."""
        second = int(self._clock())
        if self._seconds and self._seconds[-1][0] == second:
            self._seconds[-1] = (second, self._seconds[-1][1] + 1)
        else:
            self._seconds.append((second, 1))
        self._forget_before(second - RATE_WINDOW_S)

    def _forget_before(self, second: int) -> None:
        while self._seconds and self._seconds[0][0] <= second:
            self._seconds.popleft()

    def rate_per_s(self) -> float:
        """Records settled per second over the last :data:`RATE_WINDOW_S` seconds."""
        self._forget_before(int(self._clock()) - RATE_WINDOW_S)
        return sum(count for _, count in self._seconds) / RATE_WINDOW_S

    def snapshot(self) -> dict[str, Any]:
        return {
            "consumed": self.consumed,
            "ok": self.ok,
            "skipped": self.skipped,
            "retried": self.retried,
            "dead_lettered": sum(self.dead_lettered.values()),
            "dead_lettered_by_stage": {str(k): v for k, v in self.dead_lettered.items()},
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "rate_per_s": round(self.rate_per_s(), 2),
            "last_error": self.last_error,
            "stalled": self.stalled,
        }
