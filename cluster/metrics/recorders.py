"""What each actor records, on its own :class:`~cluster.metrics.registry.MetricsRegistry`.

* :class:`CallRecorder` counts how calls ended and times them, one tally per batch: the
  router's (the router core's metrics port, :class:`~actors.router.core.RouterMetrics`)
  on Ray, each worker's (its broker source's tally) on Kafka and SQS, where calls never
  pass a router. A backend's calls go one way or the other, so no call is counted twice.
* :class:`RouterRecorder` adds the breaker states, read, not pushed.
* :class:`PoolRecorder` is the supervisor's: every pool's workers and lag.
* :class:`AutoscalerRecorder` counts the autoscaler's decisions by direction.
* :class:`GatewayRecorder` counts the gateway's refusals by reason.
* :func:`trigger_families` reads a trigger replica's own counters at each scrape; the
  lag gauge comes from its first replica only (the one that reads it).

Gauges from several processes are added up on a page (:func:`~.registry.merge`), so each
gauge series has exactly one owner: the router its pools' breaker states, the supervisor
every pool's ``raybus_pool_workers`` and ``raybus_pool_lag`` on every backend (it keeps
every pool, autoscaled or not, and reads the lag the way the autoscaler does).

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
    TRIGGER_IN_FLIGHT,
    TRIGGER_LAG,
    TRIGGER_RECORDS,
    TRIGGER_RETRIES,
)
from cluster.metrics.registry import FamilySnapshot, MetricsRegistry

__all__ = [
    "AutoscalerRecorder",
    "CallRecorder",
    "GatewayRecorder",
    "PoolRecorder",
    "RouterRecorder",
    "direction_of",
    "trigger_families",
]


class CallRecorder:
    """Counts call ends by (pool, tool, outcome) and their latencies by pool."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self._requests = registry.counter(REQUESTS)
        self._latency = registry.histogram(REQUEST_LATENCY)

    def calls_ended(self, tally: CallTally) -> None:
        inc = self._requests.inc
        for labels, count in tally.outcomes.items():
            inc(labels, count)
        for pool, latencies in tally.latencies_s.items():
            self._latency.observe_many((pool,), latencies)


class RouterRecorder(CallRecorder):
    """Implements the router core's metrics port on a registry, plus breaker states."""

    def __init__(self, registry: MetricsRegistry) -> None:
        super().__init__(registry)
        self._breakers = registry.gauge(BREAKER_STATE)

    def breakers(self, states: Mapping[str, BreakerState]) -> None:
        for pool, state in states.items():
            self._breakers.set((pool,), BREAKER_STATE_VALUE[state])


class PoolRecorder:
    """The supervisor's gauges: each pool's serving workers and its latest lag reading."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self._workers = registry.gauge(POOL_WORKERS)
        self._lag = registry.gauge(POOL_LAG)

    def workers(self, serving: Mapping[str, int]) -> None:
        for pool, count in serving.items():
            self._workers.set((pool,), float(count))

    def lag(self, rows: Mapping[str, Mapping[str, Any]]) -> None:
        """Record a lag reading; a pool missing from it keeps its last value."""
        for pool, row in rows.items():
            queued = row.get("queued")
            if isinstance(queued, int | float):
                self._lag.set((pool,), float(queued))


def direction_of(decision: Decision) -> str:
    if decision.desired > decision.current:
        return "up"
    return "down" if decision.desired < decision.current else "hold"


class AutoscalerRecorder:
    """One autoscaler round: each decision's direction (workers and lag are the
    supervisor's, see :class:`PoolRecorder`)."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self._decisions = registry.counter(SCALING_DECISIONS)

    def round(self, decisions: Iterable[Decision]) -> None:
        for decision in decisions:
            self._decisions.inc((decision.pool, direction_of(decision)))


class GatewayRecorder:
    """Counts refusals: ``rate_limited``, ``authentication_required``, ``invalid_token``,
    ``host_or_origin``, ``body_too_large``, ``parse_error``, ``invalid_request``,
    ``not_allowed``, ``invalid_arguments``, ``unknown_response_id``, or ``http_<status>``
    for the SDK's own."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self._refused = registry.counter(GATEWAY_REFUSED)

    def refused(self, reason: str) -> None:
        self._refused.inc((reason,))


def trigger_families(bus: str, trigger: str, stats: Mapping[str, Any]) -> list[FamilySnapshot]:
    """One trigger replica's series, from its stats (``TriggerActor.stats``)."""
    registry = MetricsRegistry(bus)
    if "ok" not in stats:  # still starting: no counters yet
        return registry.snapshot()
    records = registry.counter(TRIGGER_RECORDS)
    records.inc((trigger, "ok"), stats["ok"])
    records.inc((trigger, "skipped"), stats["skipped"])
    for stage, count in stats["dead_lettered_by_stage"].items():
        records.inc((trigger, f"{stage}_failed"), count)
    registry.counter(TRIGGER_RETRIES).inc((trigger,), stats["retried"])
    registry.gauge(TRIGGER_IN_FLIGHT).set((trigger,), stats["in_flight"])
    if stats.get("lag") is not None:
        registry.gauge(TRIGGER_LAG).set((trigger,), stats["lag"])
    return registry.snapshot()
