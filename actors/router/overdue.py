"""Calls a worker holds past their deadline: the router's last word for their callers.

A worker answers a call whose deadline passes (it cancels the tool and replies "deadline
exceeded"). A worker that is wedged, or whose answer went missing, cannot; its callers
would wait on their own timers and see nothing from the bus. The router watches each
call it hands to a worker by deadline, and a call still unanswered ``grace_s`` after its
deadline is answered by the router (see ``RouterCore.tick``).

One heap entry per dispatch: pushing is O(log n), and a tick pops only the entries that
are due, so the watch costs nothing per tick while calls finish in time. Entries of calls
that finished stay until they are due and are then skipped.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

from transports.envelope import CorrelationKey

__all__ = ["OverdueWatch"]


class OverdueWatch:
    """Correlation keys by when they become overdue (wall clock, seconds since epoch)."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._heap: list[tuple[float, int, CorrelationKey]] = []
        self._order = itertools.count()  # keys need not be orderable: ties go by order

    def watch(self, deadline_unix_s: float | None, key: CorrelationKey) -> None:
        """Watch ``key`` (a call without a deadline is never overdue)."""
        if deadline_unix_s is not None:
            heapq.heappush(self._heap, (deadline_unix_s + self.grace_s, next(self._order), key))

    def due(self, now_unix_s: float) -> Iterator[CorrelationKey]:
        """The keys overdue at ``now_unix_s``, each once, soonest first."""
        heap = self._heap
        while heap and heap[0][0] <= now_unix_s:
            yield heapq.heappop(heap)[2]

    def __len__(self) -> int:
        return len(self._heap)
