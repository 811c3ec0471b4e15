"""Calls clients' direct lanes hold for a pool's slots, as the lanes last reported them.

A lane (:mod:`cluster.backends.lane_queue`) holds a call whose pool has no free worker in
its view instead of sending it here; those calls wait for the pool as much as the
router's own queue does, so the pool's lag counts them. A lane reports at least every
second while it holds anything; one silent for :data:`LANE_SILENCE_S` (its client closed
or died) counts no more.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LANE_SILENCE_S", "HeldByLanes"]

LANE_SILENCE_S = 3.0


@dataclass(frozen=True, slots=True)
class _Report:
    at_s: float
    rows: dict[str, tuple[int, float]]  # pool -> (held, the oldest's age when reported)


class HeldByLanes:
    def __init__(self) -> None:
        self._reports: dict[str, _Report] = {}

    def report(self, lane: str, rows: dict[str, tuple[int, float]], now_s: float) -> None:
        if rows:
            self._reports[lane] = _Report(now_s, dict(rows))
        else:
            self._reports.pop(lane, None)

    def per_pool(self, now_s: float) -> dict[str, tuple[int, float]]:
        """Pool -> (calls held by every lane heard from lately, the oldest's age now)."""
        totals: dict[str, tuple[int, float]] = {}
        for lane, report in list(self._reports.items()):
            since = now_s - report.at_s
            if since > LANE_SILENCE_S:
                del self._reports[lane]
                continue
            for pool, (held, age) in report.rows.items():
                count, oldest = totals.get(pool, (0, 0.0))
                totals[pool] = (count + held, max(oldest, age + since))
        return totals
