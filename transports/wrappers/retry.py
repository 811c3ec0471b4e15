"""``RetryTransport``: sends again after errors that are safe to retry, within a budget.

What is retried
    Only ``send``, and only for an error whose ``retriable`` class attribute is true
    (:mod:`transports.errors`): ConnectionClosed (the pipe went away; a new attempt may
    find it back) and BusTimeout. A timeout leaves the outcome unknown (the broker may
    have the message), so it is retried only where the inner transport is
    at-least-once anyway (its receivers already drop duplicates: the idempotency
    ledger), or with ``retry_unknown_outcome=True``. Nothing is retried once this
    transport is closed, and ``receive`` is never retried (a broker redelivers by
    itself).

When
    Attempt ``n`` (1 for the first retry) waits a random time in ``[0, min(max_backoff,
    initial * multiplier ** (n - 1))]`` ("full jitter": senders that failed together do
    not come back together), for at most ``max_attempts`` attempts in all.

How many
    A :class:`RetryBudget` caps retries at about ``ratio`` (20 %) of the sends: each
    send deposits ``ratio`` of a token, each retry spends one, and the balance is capped,
    so a long healthy period cannot save up a storm. A small floor (``min_per_s``) refills
    with time so a quiet sender can still retry now and then. Against a dead broker
    traffic therefore grows by at most ~20 %, instead of ``max_attempts`` times.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from transports.base import Transport
from transports.envelope import Envelope
from transports.errors import BusError, BusTimeout
from transports.message import TransportMessage
from transports.wrappers.delegate import TransportWrapper

__all__ = ["RetryBudget", "RetryPolicy", "RetryTransport"]

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff and attempt bounds (seconds)."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 <= self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError("initial_backoff_s must be between 0 and max_backoff_s")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")

    def backoff_ceiling_s(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (1-based)."""
        exponent = min(retry - 1, 64)  # past this the cap has long been reached
        return min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**exponent)

    def backoff_s(self, retry: int, uniform: Callable[[], float] = random.random) -> float:
        """A full-jitter wait before retry number ``retry``: uniform in [0, ceiling]."""
        return uniform() * self.backoff_ceiling_s(retry)


class RetryBudget:
    """A token bucket that lets retries be about ``ratio`` of the traffic.

    Args:
        ratio: tokens one send deposits (0.2: one retry per five sends).
        max_tokens: the most that can be saved up.
        min_per_s: tokens added per second of time regardless of traffic.
        clock: monotonic seconds (inject a fake one in tests).
    """

    def __init__(
        self,
        ratio: float = 0.2,
        *,
        max_tokens: float = 10.0,
        min_per_s: float = 0.1,
        clock: Clock = time.monotonic,
    ) -> None:
        if not 0 <= ratio <= 1:
            raise ValueError("ratio must be between 0 and 1")
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if min_per_s < 0:
            raise ValueError("min_per_s must not be negative")
        self._ratio = ratio
        self._max = max_tokens
        self._min_per_s = min_per_s
        self._clock = clock
        self._tokens = 0.0
        self._last = clock()

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(self._max, self._tokens + elapsed * self._min_per_s)

    def record_send(self) -> None:
        """One first attempt: deposit ``ratio`` of a token."""
        self._refill()
        self._tokens = min(self._max, self._tokens + self._ratio)

    def try_spend(self) -> bool:
        """Take one token for a retry; False (and nothing taken) when the budget is out."""
        self._refill()
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class RetryTransport(TransportWrapper):
    """Retries failed sends with capped, jittered exponential backoff, within a budget.

    Args:
        inner: the transport to send through.
        policy: attempts and backoff.
        budget: shared by every sender of this transport (pass one in to share it across
            transports to the same broker); a fresh 20 % budget when None.
        retry_unknown_outcome: retry timeouts also on transports that are not
            at-least-once, accepting a possible duplicate.
        sleep: how to wait (inject a fake in tests).
        uniform: random numbers in [0, 1) for the jitter.
    """

    def __init__(
        self,
        inner: Transport,
        *,
        policy: RetryPolicy | None = None,
        budget: RetryBudget | None = None,
        retry_unknown_outcome: bool = False,
        sleep: Sleep = asyncio.sleep,
        uniform: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(inner)
        self._policy = policy or RetryPolicy()
        self._budget = budget or RetryBudget()
        self._retry_unknown_outcome = retry_unknown_outcome
        self._sleep = sleep
        self._uniform = uniform
        self._closed = False
        self.retries = 0  # how many retries were made (for metrics and tests)

    @property
    def budget(self) -> RetryBudget:
        return self._budget

    def _safe_to_retry(self, error: BusError) -> bool:
        if self._closed or not error.retriable:
            return False
        if isinstance(error, BusTimeout):
            return self._retry_unknown_outcome or self._inner.capabilities.at_least_once
        return True

    async def send(self, message: TransportMessage, envelope: Envelope | None = None) -> None:
        """Send, retrying as the module docstring says.

        Raises:
            The last attempt's error, when it is not safe to retry, attempts are used up
            or the budget is spent.
        """
        self._budget.record_send()
        attempt = 1
        while True:
            try:
                await self._inner.send(message, envelope)
                return
            except BusError as error:
                if attempt >= self._policy.max_attempts or not self._safe_to_retry(error):
                    raise
                if not self._budget.try_spend():
                    logger.debug("retry budget spent; not retrying: %s", error)
                    raise
                delay = self._policy.backoff_s(attempt, self._uniform)
                logger.debug("send failed (%s); retry %d in %.3f s", error, attempt, delay)
                self.retries += 1
                await self._sleep(delay)
                attempt += 1

    async def close(self) -> None:
        self._closed = True
        await self._inner.close()
