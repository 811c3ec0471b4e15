"""Token buckets keyed by principal and by tool, with an injected clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Bucket", "RateLimiter"]


@dataclass
class Bucket:
    rate_per_s: float
    burst: float
    tokens: float
    updated_s: float

    def take(self, now_s: float) -> float:
        """Take one token; returns 0 when granted, else the seconds until one is free."""
        self.tokens = min(self.burst, self.tokens + (now_s - self.updated_s) * self.rate_per_s)
        self.updated_s = now_s
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate_per_s


class RateLimiter:
    """``check(principal, tool)`` spends one token from each applicable bucket.

    Buckets are per principal (so one client's burst never slows another) and per
    (principal, tool). The number of buckets is capped: the least recently used are
    forgotten first, so many distinct principals cannot grow memory without bound.
    """

    def __init__(
        self,
        per_principal: tuple[float, float] | None,
        per_tool: dict[str, tuple[float, float]],
        *,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = 100_000,
    ) -> None:
        self._per_principal = per_principal
        self._per_tool = per_tool
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: dict[tuple[str, str], Bucket] = {}

    def check(self, principal: str, tool: str | None) -> float:
        """0 if allowed, else the retry-after in seconds (nothing is spent on refusal)."""
        now = self._clock()
        keys: list[tuple[tuple[str, str], tuple[float, float]]] = []
        if self._per_principal is not None:
            keys.append(((principal, ""), self._per_principal))
        if tool is not None and tool in self._per_tool:
            keys.append(((principal, tool), self._per_tool[tool]))
        buckets = [self._bucket(key, limits, now) for key, limits in keys]
        waits = [b.take(now) for b in buckets]
        if any(waits):
            for bucket, wait in zip(buckets, waits, strict=True):
                if not wait:
                    bucket.tokens += 1  # refund: a refused call costs nothing
            return max(waits)
        return 0.0

    def _bucket(self, key: tuple[str, str], limits: tuple[float, float], now: float) -> Bucket:
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            rate, burst = limits
            bucket = Bucket(rate, burst, burst, now)
            if len(self._buckets) >= self._max_buckets:
                del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = bucket  # re-insert: dict order is recency
        return bucket
