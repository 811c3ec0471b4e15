"""A broker client's calls in flight, and the circuit breaker of each pool it calls.

On a broker backend (Kafka, SQS) calls skip the router: a client publishes each request
to its pool's topic or queue and the pool's workers take it from there. The router's
breakers never see these calls, so the breaker lives where every outcome is seen: in
the client, one :class:`~actors.router.breaker.CircuitBreaker` per pool, fed by the
answers the client receives. Why the client and not a shared actor: asking a shared
actor before every call would add an actor hop per call (the hop the broker path exists
to avoid), and a worker-side breaker could not fast-fail anyone (the request would
already sit in the broker). Each client judges a pool by its own calls, as client-side
breakers in resilience4j or Envoy's outlier detection do.

The same rules as the router's breaker: a pool fault (internal error, upstream failed,
shutting down) counts as a failure, an answer slower than ``slow_call_threshold_s`` as a
slow call, and a call its caller cancelled or let run past its deadline says nothing
about the pool (released, never recorded). The time of a call is measured from its
submission to its answer, so it includes the wait in the broker: a pool whose every
call waits longer than the threshold is, for its callers, a failing pool.

Pure logic with an injected clock; no broker, no Ray.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from actors.replies import breaker_open_reply
from actors.router.breaker import BreakerConfig, BreakerState, CircuitBreaker
from actors.worker.core import completion_of
from transports.envelope import CorrelationKey
from transports.frame import Frame
from transports.message import Response

__all__ = ["BrokerCalls"]

# A call never answered (its caller timed out) is forgotten this long after its
# deadline: the caller has its outcome by then, and the map must not grow without bound.
_FORGET_AFTER_DEADLINE_S = 10.0
# The map is swept for such calls only when it has doubled since the last sweep (at
# least this many entries): a sweep costs one pass, paid once per doubling.
_SWEEP_FLOOR = 1024


@dataclass(frozen=True, slots=True)
class _InFlight:
    pool: str
    submitted_at_s: float
    deadline_unix_s: float | None
    keyed: bool = False  # carries an idempotency key: outlives its client (in_flight)


class BrokerCalls:
    """Which pool each call in flight went to, and each pool's breaker.

    Not thread-safe: owned by one client's event loop.
    """

    def __init__(
        self,
        breaker: BreakerConfig,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = breaker
        self._clock = clock
        self._wall_clock = wall_clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._in_flight: dict[CorrelationKey, _InFlight] = {}
        self._swept_at_size = _SWEEP_FLOOR

    def admit(self, frame: Frame, pool: str) -> Frame | None:
        """Let a request to ``pool`` go (None), or the fast "circuit open" answer to it."""
        key = frame.envelope.correlation_key
        breaker = self.breaker(pool)
        if not breaker.try_acquire(key):
            return breaker_open_reply(frame, pool, self._config.open_cooldown_s)
        envelope = frame.envelope
        keyed = envelope.idempotency_key is not None
        self._in_flight[key] = _InFlight(pool, self._clock(), envelope.deadline_unix_s, keyed)
        if len(self._in_flight) >= 2 * self._swept_at_size:
            self._forget_unanswered()
        return None

    def answered(self, key: CorrelationKey, response: Response) -> None:
        """A call's answer arrived: the pool's verdict goes to its breaker."""
        call = self._in_flight.pop(key, None)
        if call is None:
            return  # a late answer to a call withdrawn or forgotten, or a repeat
        ended = completion_of(key, response, self._clock() - call.submitted_at_s)
        breaker = self.breaker(call.pool)
        if ended.abandoned:
            breaker.release(key)
        else:
            breaker.record(key, failed=ended.failed, duration_s=ended.duration_s)

    def withdraw(self, key: CorrelationKey) -> str | None:
        """Forget a call with no verdict on its pool (cancelled, never sent); its pool."""
        call = self._in_flight.pop(key, None)
        if call is None:
            return None
        self.breaker(call.pool).release(key)
        return call.pool

    def in_flight(self) -> list[CorrelationKey]:
        """The calls a closing client cancels: those without an idempotency key.

        A keyed call runs on when its client goes: the caller resends it with the same
        key and gets its answer from the ledger (README "Idempotency keys").
        """
        return [key for key, call in self._in_flight.items() if not call.keyed]

    def breaker(self, pool: str) -> CircuitBreaker:
        breaker = self._breakers.get(pool)
        if breaker is None:
            breaker = self._breakers[pool] = CircuitBreaker(pool, self._config, self._clock)
        return breaker

    def breaker_states(self) -> dict[str, BreakerState]:
        """Each pool's breaker as this client sees it now."""
        return {pool: breaker.state for pool, breaker in self._breakers.items()}

    def _forget_unanswered(self) -> None:
        horizon = self._wall_clock() - _FORGET_AFTER_DEADLINE_S
        gone = [
            key
            for key, call in self._in_flight.items()
            if call.deadline_unix_s is not None and call.deadline_unix_s < horizon
        ]
        for key in gone:
            self.withdraw(key)
        self._swept_at_size = max(_SWEEP_FLOOR, len(self._in_flight))
