"""A bounded idempotency ledger: a redelivered request must not run twice.

Brokers deliver at least once: a worker that produced a response but died before its
offset was committed (or before an SQS delete) sees the request again. The ledger,
keyed by the request key (the envelope's idempotency key, else its correlation key),
turns the duplicate into one of three decisions:

- ``NEW``: never seen (or forgotten): run it, then :meth:`DedupLedger.complete` it.
- ``IN_PROGRESS``: a run is under way here: drop the duplicate, that run will answer.
- ``DONE``: it ran: send the stored response bytes again, do not run it again.

The ledger is bounded twice over: entries older than ``ttl_s`` are forgotten, and beyond
``max_entries`` the oldest entry is evicted. Either way a forgotten key is ``NEW`` again,
so the bounds trade memory for the window in which duplicates are recognised; size the
TTL above the broker's redelivery horizon (session timeout, visibility timeout).
Eviction takes the oldest entry whatever its state: an evicted in-progress key can run
a second time if its duplicate arrives later, which is why ``max_entries`` should be well
above the number of requests in flight.

Pure logic with an injected clock; no broker, no Ray, no locks (one event loop owns it).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

__all__ = ["Decision", "DecisionKind", "DedupLedger"]


class DecisionKind(Enum):
    """What to do with a request, given what the ledger remembers about its key."""

    NEW = "new"
    IN_PROGRESS = "in_progress"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :meth:`DedupLedger.begin`; ``response`` is set only for ``DONE``."""

    kind: DecisionKind
    response: bytes | None = None


_NEW = Decision(DecisionKind.NEW)
_IN_PROGRESS = Decision(DecisionKind.IN_PROGRESS)


@dataclass(slots=True)
class _Entry:
    stamp: float
    response: bytes | None = None  # None while in progress


class DedupLedger:
    """Remembers which request keys are running or done, within a size and age bound.

    Args:
        max_entries: the most keys remembered; beyond it the oldest is evicted.
        ttl_s: how long a key is remembered after it began (in progress) or completed.
        clock: monotonic seconds; injected so tests control time.

    Raises:
        ValueError: ``max_entries`` < 1 or ``ttl_s`` <= 0.
    """

    def __init__(
        self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._clock = clock
        # Ordered by stamp: every write moves its key to the end with the current time,
        # and the clock is monotonic, so the oldest (first to expire) is always first.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        self._expire(self._clock())
        return len(self._entries)

    def begin(self, key: str) -> Decision:
        """Decide what to do with a request; a ``NEW`` key is recorded as in progress."""
        now = self._clock()
        self._expire(now)
        entry = self._entries.get(key)
        if entry is None:
            self._store(key, _Entry(now), now)
            return _NEW
        if entry.response is None:
            return _IN_PROGRESS
        return Decision(DecisionKind.DONE, entry.response)

    def complete(self, key: str, response: bytes) -> None:
        """Record the response a key's run produced; its TTL restarts now.

        A key that was evicted or expired while it ran is recorded again, so later
        duplicates still get the stored response.
        """
        now = self._clock()
        self._expire(now)
        self._store(key, _Entry(now, bytes(response)), now)

    def abandon(self, key: str) -> None:
        """Forget an in-progress key whose run ended without a response to store.

        A redelivery then runs it again, which is right for a run that failed before it
        had any effect. A completed key is kept.
        """
        entry = self._entries.get(key)
        if entry is not None and entry.response is None:
            del self._entries[key]

    def _store(self, key: str, entry: _Entry, now: float) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def _expire(self, now: float) -> None:
        horizon = now - self._ttl_s
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.stamp > horizon:
                break
            self._entries.popitem(last=False)
