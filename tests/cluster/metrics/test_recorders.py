"""What the router, the supervisor, the autoscaler and the gateway record, read back as the
page shows it."""

from __future__ import annotations

from actors.autoscaler import Decision
from actors.router.breaker import BreakerState
from actors.router.outcomes import CallOutcome, CallTally
from cluster.metrics.exposition import render
from cluster.metrics.recorders import (
    AutoscalerRecorder,
    GatewayRecorder,
    PoolRecorder,
    RouterRecorder,
)
from cluster.metrics.registry import MetricsRegistry
from tests.cluster.metrics.prometheus_text import Page, parse


def page_of(registry: MetricsRegistry) -> Page:
    return parse(render(registry.snapshot()))


def test_the_router_recorder_adds_up_tallies_and_times_each_pool() -> None:
    registry = MetricsRegistry("demo")
    recorder = RouterRecorder(registry)
    for _ in range(2):
        tally = CallTally()
        tally.add("kit", "echo", CallOutcome.OK)
        tally.add("kit", "echo", CallOutcome.OK)
        tally.add("kit", "fail", CallOutcome.TOOL_ERROR)
        tally.latency("kit", 0.004)
        tally.latency("kit", 0.02)
        recorder.calls_ended(tally)
    recorder.breakers({"kit": BreakerState.OPEN, "calc": BreakerState.CLOSED})
    page = page_of(registry)
    assert page.value("raybus_requests_total", tool="echo", outcome="ok") == 4
    assert page.value("raybus_requests_total", tool="fail", outcome="tool_error") == 2
    assert page.value("raybus_request_latency_seconds_count", pool="kit") == 4
    assert page.value("raybus_request_latency_seconds_bucket", pool="kit", le="0.005") == 2
    assert page.value("raybus_breaker_state", bus="demo", pool="kit") == 2
    assert page.value("raybus_breaker_state", pool="calc") == 0


def decision(pool: str, current: int, desired: int) -> Decision:
    return Decision(0.0, pool, current, desired, desired, "test", None)


def test_the_autoscaler_recorder_counts_directions_only() -> None:
    registry = MetricsRegistry("demo")
    recorder = AutoscalerRecorder(registry)
    recorder.round([decision("kit", 2, 4), decision("calc", 3, 3)])
    recorder.round([decision("kit", 4, 1), decision("calc", 3, 3)])
    page = page_of(registry)
    assert page.value("raybus_scaling_decisions_total", pool="kit", direction="up") == 1
    assert page.value("raybus_scaling_decisions_total", pool="kit", direction="down") == 1
    assert page.value("raybus_scaling_decisions_total", pool="calc", direction="hold") == 2
    # Workers and lag are the supervisor's gauges: a second owner would double them.
    assert "raybus_pool_workers" not in page.types
    assert "raybus_pool_lag" not in page.types


def test_the_pool_recorder_sets_workers_and_keeps_lag_a_reading_left_out() -> None:
    registry = MetricsRegistry("demo")
    recorder = PoolRecorder(registry)
    recorder.workers({"kit": 2, "calc": 0})
    recorder.lag({"kit": {"queued": 12, "in_flight": 3}, "calc": {"queued": 0}})
    recorder.lag({"calc": {"queued": 4}})  # kit left out of this reading
    page = page_of(registry)
    assert page.value("raybus_pool_workers", bus="demo", pool="kit") == 2
    assert page.value("raybus_pool_workers", pool="calc") == 0
    assert page.value("raybus_pool_lag", pool="kit") == 12
    assert page.value("raybus_pool_lag", pool="calc") == 4


def test_the_gateway_recorder_counts_refusals_by_reason() -> None:
    registry = MetricsRegistry("demo")
    recorder = GatewayRecorder(registry)
    for reason in ["rate_limited", "rate_limited", "host_or_origin"]:
        recorder.refused(reason)
    page = page_of(registry)
    assert page.value("raybus_gateway_refused_total", reason="rate_limited") == 2
    assert page.value("raybus_gateway_refused_total", reason="host_or_origin") == 1
