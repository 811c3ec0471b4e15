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

Keyed requests (a caller's idempotency key, README "Idempotency keys") live in a second
ledger of :class:`PoolLedger` with their own, much longer TTL and bound: a correlation key
only has to outlive a broker's redelivery, an idempotency key the caller's resends (an
edge device offline for hours). A keyed entry keeps a digest of its arguments, so a key
reused for a different call is refused (``CONFLICT``) rather than answered with another
call's result.

Pure logic with an injected clock; no broker, no Ray, no locks (one event loop owns it).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

__all__ = ["Decision", "DecisionKind", "DedupLedger", "PoolLedger"]


class DecisionKind(Enum):
    """What to do with a request, given what the ledger remembers about its key."""

    NEW = "new"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    # A keyed request whose key is held by a call with other arguments: never run.
    CONFLICT = "conflict"
    # A keyed request whose key has been in progress longer than any run may last: the
    # worker running it was lost, after it may have run. Never run again.
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :meth:`DedupLedger.begin`; ``response`` is set only for ``DONE``."""

    kind: DecisionKind
    response: bytes | None = None


_NEW = Decision(DecisionKind.NEW)
_IN_PROGRESS = Decision(DecisionKind.IN_PROGRESS)
_CONFLICT = Decision(DecisionKind.CONFLICT)
_LOST = Decision(DecisionKind.LOST)


@dataclass(slots=True)
class _Entry:
    stamp: float
    response: bytes | None = None  # None while in progress
    digest: str | None = None  # of the arguments, for keyed requests


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
        self,
        max_entries: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_forget: Callable[[str], None] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._clock = clock
        # Told each key expired or evicted (a journal deletes its copy), never abandoned.
        self._on_forget = on_forget
        # Ordered by stamp: every write moves its key to the end with the current time,
        # and the clock is monotonic, so the oldest (first to expire) is always first.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        self._expire(self._clock())
        return len(self._entries)

    def begin(self, key: str, digest: str | None = None) -> Decision:
        """Decide what to do with a request; a ``NEW`` key is recorded as in progress.

        With ``digest`` (a keyed request's arguments), a key remembered with another
        digest is a ``CONFLICT``, whatever its state.
        """
        now = self._clock()
        self._expire(now)
        entry = self._entries.get(key)
        if entry is None:
            self._store(key, _Entry(now, digest=digest), now)
            return _NEW
        if digest is not None and entry.digest is not None and entry.digest != digest:
            return _CONFLICT
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
        held = self._entries.get(key)
        digest = held.digest if held is not None else None
        self._store(key, _Entry(now, bytes(response), digest), now)

    def peek(self, key: str) -> Decision | None:
        """What :meth:`begin` would decide, without claiming a key it does not hold."""
        self._expire(self._clock())
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.response is None:
            return _IN_PROGRESS
        return Decision(DecisionKind.DONE, entry.response)

    def in_progress_for(self, key: str) -> float:
        """Seconds since an in-progress key began (0 for any other key)."""
        entry = self._entries.get(key)
        if entry is None or entry.response is not None:
            return 0.0
        return self._clock() - entry.stamp

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
            self._forget(self._entries.popitem(last=False)[0])

    def _expire(self, now: float) -> None:
        horizon = now - self._ttl_s
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.stamp > horizon:
                break
            self._forget(self._entries.popitem(last=False)[0])

    def _forget(self, key: str) -> None:
        if self._on_forget is not None:
            self._on_forget(key)

    def restore(self, key: str, age_s: float, digest: str | None, response: bytes | None) -> None:
        """Remember a key as a journal kept it (``age_s`` since its stamp), before serving.

        Restore oldest first: entries are kept in stamp order.
        """
        now = self._clock()
        if age_s >= self._ttl_s:
            return
        self._store(key, _Entry(now - max(0.0, age_s), response, digest), now)

    def entry(self, key: str) -> tuple[str | None, bytes | None] | None:
        """(digest, response) of a remembered key (response None: in progress)."""
        held = self._entries.get(key)
        return None if held is None else (held.digest, held.response)


class PoolLedger:
    """A bus's two ledgers: correlation keys (broker redeliveries) and idempotency keys.

    A keyed request is decided by its idempotency key (:meth:`begin_keyed`), never by its
    correlation key; the correlation key rides along as an *alias* so that a caller's
    cancellation (:meth:`withdraw`, which knows only the correlation key) still reaches a
    keyed request: withdrawn before a worker began it, it never runs; begun, the
    withdrawal fails and the caller tells the workers to stop it.

    Args:
        ttl_s / max_entries: the correlation keys' bounds (the broker's redelivery horizon).
        keyed_ttl_s / keyed_max_entries: the idempotency keys' bounds.
        clock: monotonic seconds, shared by both.
    """

    def __init__(
        self,
        ttl_s: float,
        max_entries: int,
        keyed_ttl_s: float,
        keyed_max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        on_forget_keyed: Callable[[str], None] | None = None,
    ) -> None:
        self.by_correlation = DedupLedger(max_entries, ttl_s, clock)
        self.keyed = DedupLedger(keyed_max_entries, keyed_ttl_s, clock, on_forget_keyed)

    def withdraw(self, alias: str, withdrawn: bytes) -> bool:
        """Mark a call no worker has begun as answered with ``withdrawn``; whether it was."""
        if self.by_correlation.begin(alias).kind is not DecisionKind.NEW:
            return False
        self.by_correlation.complete(alias, withdrawn)
        return True

    def begin_keyed(
        self,
        key: str,
        digest: str,
        alias: str | None = None,
        lost_after_s: float | None = None,
    ) -> Decision:
        """Decide a keyed request: ``NEW`` claims ``key`` (and ``alias``) for this run.

        A withdrawn ``alias`` answers ``DONE`` with the withdrawal and claims nothing, so
        a resend with the same key runs later. A key in progress for more than
        ``lost_after_s`` (longer than any run may last) is ``LOST``.
        """
        if alias is not None:
            claimed = self.by_correlation.begin(alias)
            if claimed.kind is DecisionKind.DONE:
                return claimed
        decision = self.keyed.begin(key, digest)
        if (
            decision.kind is DecisionKind.IN_PROGRESS
            and lost_after_s is not None
            and self.keyed.in_progress_for(key) > lost_after_s
        ):
            decision = _LOST
        if alias is not None and decision.kind not in (DecisionKind.NEW, DecisionKind.IN_PROGRESS):
            self.by_correlation.abandon(alias)  # answered at once: nothing left to withdraw
        return decision

    def complete_keyed(self, key: str, response: bytes, alias: str | None = None) -> None:
        """Store a keyed run's answer (its TTL restarts); the alias is released."""
        self.keyed.complete(key, response)
        if alias is not None:
            self.by_correlation.abandon(alias)

    def abandon_keyed(self, key: str, alias: str | None = None) -> None:
        """A keyed run ended without an answer (cancelled): a resend runs it again."""
        self.keyed.abandon(key)
        if alias is not None:
            self.by_correlation.abandon(alias)
