"""What the router, the supervisor, the autoscaler and the gateway record, read back as the
page shows it."""

from __future__ import annotations

from actors.autoscaler import Decision
from actors.router.breaker import BreakerState
from actors.router.outcomes import CallOutcome, CallTally
from actors.triggers.stats import Stage, TriggerStats
from cluster.metrics.exposition import render
from cluster.metrics.recorders import (
    AutoscalerRecorder,
    GatewayRecorder,
    PoolRecorder,
    RouterRecorder,
    trigger_families,
)
from cluster.metrics.registry import MetricsRegistry, merge
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


def test_trigger_families_count_records_by_outcome_and_take_lag_from_the_reading_replica() -> None:
    def replica(ok: int, dead: dict[Stage, int], lag: int | None) -> dict[str, object]:
        stats = TriggerStats(clock=lambda: 0.0, max_in_flight=16)
        stats.ok, stats.skipped, stats.retried, stats.in_flight = ok, 1, 2, 3
        stats.dead_lettered.update(dead)
        return {**stats.snapshot(), "lag": lag}

    first = trigger_families("demo", "orders", replica(5, {Stage.CALL: 2}, lag=7))
    second = trigger_families("demo", "orders", replica(4, {Stage.MAPPING: 1}, lag=None))
    starting = trigger_families("demo", "orders", {"state": "starting", "lag": None})
    page = parse(render(merge([first, second, starting])))
    assert page.value("raybus_trigger_records_total", outcome="ok") == 9
    assert page.value("raybus_trigger_records_total", outcome="skipped") == 2
    assert page.value("raybus_trigger_records_total", outcome="call_failed") == 2
    assert page.value("raybus_trigger_records_total", outcome="mapping_failed") == 1
    assert page.value("raybus_trigger_records_total", outcome="output_failed") == 0
    assert page.value("raybus_trigger_retries_total", trigger="orders") == 4
    assert page.value("raybus_trigger_in_flight", trigger="orders") == 6
    assert page.value("raybus_trigger_lag", trigger="orders") == 7  # one owner: no sum
