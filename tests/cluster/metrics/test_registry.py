"""The in-process registry, its snapshots and merges, and the Prometheus text page."""

from __future__ import annotations

import pickle

import pytest

from cluster.metrics.catalog import GATEWAY_REFUSED, REQUEST_LATENCY, REQUESTS
from cluster.metrics.exposition import render
from cluster.metrics.registry import MetricKind, MetricSpec, MetricsRegistry, merge
from tests.cluster.metrics.prometheus_text import parse

LATENCY = MetricSpec("t_latency_seconds", MetricKind.HISTOGRAM, "t", ("pool",), (0.1, 1.0))
WORKERS = MetricSpec("t_workers", MetricKind.GAUGE, "t", ("pool",))


def test_every_series_carries_the_bus_label_first() -> None:
    registry = MetricsRegistry("demo")
    registry.counter(REQUESTS).inc(("kit", "echo", "ok"), 3)
    page = parse(render(registry.snapshot()))
    labels = {"bus": "demo", "pool": "kit", "tool": "echo", "outcome": "ok"}
    assert page.samples == [("raybus_requests_total", labels, 3)]
    assert page.types["raybus_requests_total"] == "counter"


def test_a_histogram_renders_cumulative_upper_inclusive_buckets_sum_and_count() -> None:
    registry = MetricsRegistry("b")
    histogram = registry.histogram(LATENCY)
    histogram.observe_many(("kit",), [0.05, 0.1, 0.5, 7.0])
    text = render(registry.snapshot())
    assert text.splitlines()[2:] == [
        't_latency_seconds_bucket{bus="b",pool="kit",le="0.1"} 2',
        't_latency_seconds_bucket{bus="b",pool="kit",le="1"} 3',
        't_latency_seconds_bucket{bus="b",pool="kit",le="+Inf"} 4',
        't_latency_seconds_sum{bus="b",pool="kit"} 7.65',
        't_latency_seconds_count{bus="b",pool="kit"} 4',
    ]


def test_label_values_and_help_are_escaped_and_read_back_unchanged() -> None:
    registry = MetricsRegistry('a"b\\c\nd')
    registry.counter(GATEWAY_REFUSED).inc(("x",))
    spec = MetricSpec("t_help_total", MetricKind.COUNTER, "line\\one\nline two")
    registry.counter(spec).inc()
    text = render(registry.snapshot())
    assert "# HELP t_help_total line\\\\one\\nline two" in text
    assert parse(text).value("raybus_gateway_refused_total", bus='a"b\\c\nd', reason="x") == 1


def test_gauges_keep_the_last_value_and_snapshots_do_not_move_with_later_records() -> None:
    registry = MetricsRegistry("b")
    gauge = registry.gauge(WORKERS)
    gauge.set(("kit",), 2)
    gauge.set(("kit",), 5)
    histogram = registry.histogram(LATENCY)
    histogram.observe(("kit",), 0.2)
    before = registry.snapshot()
    gauge.set(("kit",), 1)
    histogram.observe(("kit",), 0.2)
    page = parse(render(before))
    assert page.value("t_workers", pool="kit") == 5
    assert page.value("t_latency_seconds_count", pool="kit") == 1


def test_merging_adds_counters_and_histograms_of_the_same_series() -> None:
    replicas = [MetricsRegistry("b"), MetricsRegistry("b")]
    for n, registry in enumerate(replicas, start=1):
        registry.counter(GATEWAY_REFUSED).inc(("rate_limited",), n)
        registry.counter(GATEWAY_REFUSED).inc((f"only_{n}",))
        registry.histogram(REQUEST_LATENCY).observe(("kit",), 0.003 * n)
    snapshots = [pickle.loads(pickle.dumps(r.snapshot())) for r in replicas]  # as over Ray
    page = parse(render(merge(snapshots)))
    assert page.value("raybus_gateway_refused_total", reason="rate_limited") == 3
    assert page.value("raybus_gateway_refused_total", reason="only_1") == 1
    assert page.value("raybus_gateway_refused_total", reason="only_2") == 1
    assert page.value("raybus_request_latency_seconds_count", pool="kit") == 2
    assert page.value("raybus_request_latency_seconds_sum", pool="kit") == pytest.approx(0.009)


def test_a_family_is_one_definition_per_registry() -> None:
    registry = MetricsRegistry("b")
    assert registry.counter(REQUESTS) is registry.counter(REQUESTS)
    with pytest.raises(TypeError, match="is a counter"):
        registry.gauge(REQUESTS)
    with pytest.raises(ValueError, match="another definition"):
        registry.counter(MetricSpec(REQUESTS.name, MetricKind.COUNTER, "other help"))


def test_bad_definitions_are_refused_when_declared() -> None:
    with pytest.raises(ValueError, match="ascending"):
        MetricSpec("t_h", MetricKind.HISTOGRAM, "t", (), (1.0, 0.5))
    with pytest.raises(ValueError, match="_total"):
        MetricSpec("t_calls", MetricKind.COUNTER, "t")


def test_an_empty_registry_renders_an_empty_page() -> None:
    assert render(MetricsRegistry("b").snapshot()) == ""
