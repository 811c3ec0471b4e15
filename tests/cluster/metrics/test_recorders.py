"""What the router, the autoscaler and the gateway record, read back as the page shows it."""

from __future__ import annotations

from actors.autoscaler import Decision
from actors.router.breaker import BreakerState
from actors.router.outcomes import CallOutcome, CallTally
from cluster.metrics.exposition import render
from cluster.metrics.recorders import AutoscalerRecorder, GatewayRecorder, RouterRecorder
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


def test_the_autoscaler_recorder_counts_directions_and_reads_workers_and_lag() -> None:
    registry = MetricsRegistry("demo")
    recorder = AutoscalerRecorder(registry)
    lag = {"kit": {"queued": 12, "in_flight": 3, "workers": 2}, "calc": {"queued": 0}}
    recorder.round([decision("kit", 2, 4), decision("calc", 3, 3)], lag)
    recorder.round([decision("kit", 4, 1), decision("calc", 3, 3)], {})  # no signals
    page = page_of(registry)
    assert page.value("raybus_scaling_decisions_total", pool="kit", direction="up") == 1
    assert page.value("raybus_scaling_decisions_total", pool="kit", direction="down") == 1
    assert page.value("raybus_scaling_decisions_total", pool="calc", direction="hold") == 2
    # Without the backend's count of serving workers, the size the supervisor keeps.
    assert page.value("raybus_pool_workers", pool="kit") == 4
    assert page.value("raybus_pool_workers", pool="calc") == 3
    assert page.value("raybus_pool_lag", pool="kit") == 12  # kept while signals are missing
    assert page.value("raybus_pool_lag", pool="calc") == 0


def test_the_gateway_recorder_counts_refusals_by_reason() -> None:
    registry = MetricsRegistry("demo")
    recorder = GatewayRecorder(registry)
    for reason in ["rate_limited", "rate_limited", "host_or_origin"]:
        recorder.refused(reason)
    page = page_of(registry)
    assert page.value("raybus_gateway_refused_total", reason="rate_limited") == 2
    assert page.value("raybus_gateway_refused_total", reason="host_or_origin") == 1
