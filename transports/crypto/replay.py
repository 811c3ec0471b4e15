"""Replay windows: each sender's sequence numbers are accepted once, in any order nearby.

A window remembers the highest sequence number seen from one sender and a bitmap of the
``size`` numbers below it (RFC 4303 section 3.4.3's sliding window, with a Python int as
the bitmap so the size can be large). A number is refused when it was already accepted,
when it is older than the window, or while an earlier delivery of it is still pending.

Brokers deliver at least once: a message that was received and then *nacked* must be
accepted again when it is redelivered, or the replay check would turn every retry into
a loss. So for such transports acceptance has two steps: :meth:`ReplayWindow.reserve`
when it arrives (a second copy now is refused), then :meth:`ReplayWindow.commit` on
``ack`` (refused for good) or :meth:`ReplayWindow.release` on ``nack`` (may come again).

Windows live in memory, per receiving process: a restarted receiver starts empty. For
requests the pool-wide idempotency ledger still stops a replayed call from running twice.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["DEFAULT_MAX_SENDERS", "DEFAULT_WINDOW", "MIN_WINDOW", "ReplayGuard", "ReplayWindow"]

MIN_WINDOW = 64
# Requests of one client spread over a topic's partitions, which a consumer reads at
# different paces: thousands of numbers of reordering are normal under a burst. 2^16 bits
# cost 8 KiB per sender and a shift of that size takes about a microsecond.
DEFAULT_WINDOW = 2**16
DEFAULT_MAX_SENDERS = 4096


class ReplayWindow:
    """One sender's accepted sequence numbers."""

    __slots__ = ("_highest", "_mask", "_pending", "_seen", "_size")

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < MIN_WINDOW:
            raise ValueError(f"a replay window holds at least {MIN_WINDOW} numbers")
        self._size = size
        self._mask = (1 << size) - 1
        self._highest = -1
        self._seen = 0  # bit i: highest - i was accepted
        self._pending: set[int] = set()

    def _acceptable(self, seq: int) -> bool:
        if seq < 0 or seq in self._pending:
            return False
        if seq > self._highest:
            return True
        offset = self._highest - seq
        return offset < self._size and not (self._seen >> offset) & 1

    def reserve(self, seq: int) -> bool:
        """Hold ``seq`` for a delivery in progress; False if it must be refused."""
        if not self._acceptable(seq):
            return False
        self._pending.add(seq)
        return True

    def commit(self, seq: int) -> None:
        """``seq`` was accepted for good: refuse it from now on."""
        self._pending.discard(seq)
        if seq > self._highest:
            shift = seq - self._highest
            self._seen = ((self._seen << shift) | 1) & self._mask if shift < self._size else 1
            self._highest = seq
            floor = seq - self._size
            if any(p <= floor for p in self._pending):
                # Fell out of the window while pending: a redelivery is too old anyway.
                self._pending = {p for p in self._pending if p > floor}
            return
        offset = self._highest - seq
        if offset < self._size:
            self._seen |= 1 << offset

    def release(self, seq: int) -> None:
        """The delivery of ``seq`` was given back (nack): a redelivery may be accepted."""
        self._pending.discard(seq)

    def accept(self, seq: int) -> bool:
        """Reserve and commit at once (transports that never redeliver)."""
        if not self.reserve(seq):
            return False
        self.commit(seq)
        return True


class ReplayGuard:
    """Windows for many senders, the least recently heard ones forgotten past a bound.

    A forgotten sender starts a new window: its old messages could be accepted once more.
    Senders put a random epoch in their id, so live senders are few, and the bound only
    stops a flood of senders from growing memory without limit.
    """

    def __init__(
        self, window: int = DEFAULT_WINDOW, max_senders: int = DEFAULT_MAX_SENDERS
    ) -> None:
        if window < MIN_WINDOW:
            raise ValueError(f"a replay window holds at least {MIN_WINDOW} numbers")
        if max_senders < 1:
            raise ValueError("max_senders must be at least 1")
        self._window = window
        self._max_senders = max_senders
        self._windows: OrderedDict[str, ReplayWindow] = OrderedDict()

    def window_of(self, sender: str) -> ReplayWindow:
        window = self._windows.get(sender)
        if window is None:
            window = self._windows[sender] = ReplayWindow(self._window)
            while len(self._windows) > self._max_senders:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(sender)
        return window
