"""What each actor records, on its own :class:`~cluster.metrics.registry.MetricsRegistry`.

* :class:`RouterRecorder` is the router core's metrics port
  (:class:`~actors.router.core.RouterMetrics`): one tally per batch becomes a few
  counter increments and histogram observations; breaker states are read, not pushed.
* :class:`AutoscalerRecorder` turns a round's decisions and signals into gauges and
  decision counts.
* :class:`GatewayRecorder` counts the gateway's refusals by reason.

All of it is plain Python (no Ray), so the gateway and the recorders test without Ray.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from actors.autoscaler import Decision
from actors.router.breaker import BreakerState
from actors.router.outcomes import CallTally
from cluster.metrics.catalog import (
    BREAKER_STATE,
    BREAKER_STATE_VALUE,
    GATEWAY_REFUSED,
    POOL_LAG,
    POOL_WORKERS,
    REQUEST_LATENCY,
    REQUESTS,
    SCALING_DECISIONS,
)
from cluster.metrics.registry import MetricsRegistry

__all__ = ["AutoscalerRecorder", "GatewayRecorder", "RouterRecorder", "direction_of"]


class RouterRecorder:
    """Implements the router core's metrics port on a registry."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self._requests = registry.counter(REQUESTS)
        self._latency = registry.histogram(REQUEST_LATENCY)
        self._breakers = registry.gauge(BREAKER_STATE)

    def calls_ended(self, tally: CallTally) -> None:
        inc = self._requests.inc
        for labels, count in tally.outcomes.items():
            inc(labels, count)
        for pool, latencies in tally.latencies_s.items():
            self._latency.observe_many((pool,), latencies)

    def breakers(self, states: Mapping[str, BreakerState]) -> None:
        for pool, state in states.items():
            self._breakers.set((pool,), BREAKER_STATE_VALUE[state])


def direction_of(decision: Decision) -> str:
    if decision.desired > decision.current:
        return "up"
    return "down" if decision.desired < decision.current else "hold"


class AutoscalerRecorder:
    """One autoscaler round: workers and lag per pool, and each decision's direction."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self._workers = registry.gauge(POOL_WORKERS)
        self._lag = registry.gauge(POOL_LAG)
        self._decisions = registry.counter(SCALING_DECISIONS)

    def round(self, decisions: Iterable[Decision], lag: Mapping[str, Mapping[str, Any]]) -> None:
        """Record a round; a pool without a lag reading keeps its last lag value.

        Workers are the ones serving when the backend reports them (the router's routed
        workers), otherwise the size the supervisor keeps.
        """
        for decision in decisions:
            pool = decision.pool
            self._decisions.inc((pool, direction_of(decision)))
            row = lag.get(pool)
            serving = row.get("workers") if row is not None else None
            workers = serving if isinstance(serving, int) else decision.current
            self._workers.set((pool,), float(workers))
            queued = row.get("queued") if row is not None else None
            if isinstance(queued, int | float):
                self._lag.set((pool,), float(queued))


class GatewayRecorder:
    """Counts refusals: ``rate_limited``, ``authentication_required``, ``invalid_token``,
    ``host_or_origin``, ``body_too_large``, ``parse_error``, ``invalid_request``,
    ``not_allowed``, ``invalid_arguments``, or ``http_<status>`` for the SDK's own."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self._refused = registry.counter(GATEWAY_REFUSED)

    def refused(self, reason: str) -> None:
        self._refused.inc((reason,))
