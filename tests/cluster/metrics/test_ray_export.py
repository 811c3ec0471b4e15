"""Forwarding to ``ray.util.metrics``: only what changed, histograms replayed exactly.

The sinks here stand in for Ray's metric objects (which cannot be read back): they keep
what a flush gave them, the way Ray's agent would aggregate it.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from dataclasses import dataclass, field

import pytest

from cluster.metrics.catalog import BREAKER_STATE, REQUEST_LATENCY, REQUESTS
from cluster.metrics.ray_export import RayExport, RayMetricSinks, export_forever
from cluster.metrics.registry import MetricSpec, MetricsRegistry

Tags = dict[str, str]


@dataclass
class Sink:
    spec: MetricSpec
    calls: list[tuple[float, Tags]] = field(default_factory=list)

    def inc(self, value: float, tags: Tags) -> None:
        self.calls.append((value, tags))

    def set(self, value: float, tags: Tags) -> None:
        self.calls.append((value, tags))

    def observe(self, value: float, tags: Tags) -> None:
        self.calls.append((value, tags))

    def buckets(self) -> list[int]:
        counts = [0] * (len(self.spec.buckets) + 1)
        for value, _ in self.calls:
            counts[bisect_left(self.spec.buckets, value)] += 1
        return counts


@dataclass
class Sinks:
    made: dict[str, Sink] = field(default_factory=dict)

    def _make(self, spec: MetricSpec) -> Sink:
        assert spec.name not in self.made, "one metric object per family"
        sink = self.made[spec.name] = Sink(spec)
        return sink

    counter = gauge = histogram = _make


def test_counters_forward_their_increase_since_the_last_flush_with_the_bus_tag() -> None:
    registry = MetricsRegistry("demo")
    sinks = Sinks()
    export = RayExport(registry, sinks)
    requests = registry.counter(REQUESTS)
    requests.inc(("kit", "echo", "ok"), 5)
    export.flush()
    export.flush()  # nothing new: nothing sent
    requests.inc(("kit", "echo", "ok"), 2)
    export.flush()
    tags = {"bus": "demo", "pool": "kit", "tool": "echo", "outcome": "ok"}
    assert sinks.made[REQUESTS.name].calls == [(5, tags), (2, tags)]


def test_gauges_are_set_at_every_flush_so_ray_keeps_them() -> None:
    registry = MetricsRegistry("demo")
    sinks = Sinks()
    export = RayExport(registry, sinks)
    registry.gauge(BREAKER_STATE).set(("kit",), 2)
    export.flush()
    export.flush()
    assert [v for v, _ in sinks.made[BREAKER_STATE.name].calls] == [2, 2]


def test_histograms_arrive_with_exact_bucket_counts_and_sum() -> None:
    registry = MetricsRegistry("demo")
    sinks = Sinks()
    export = RayExport(registry, sinks)
    latency = registry.histogram(REQUEST_LATENCY)
    first = [0.0004, 0.001, 0.0011, 0.003, 0.2, 0.24, 1000.0]
    latency.observe_many(("kit",), first)
    export.flush()
    second = [0.001, 0.001, 0.07]  # a value on a bound stays in its bucket (le)
    latency.observe_many(("kit",), second)
    export.flush()
    sink = sinks.made[REQUEST_LATENCY.name]
    recorded = latency.series[("kit",)]
    assert sink.buckets() == recorded.counts
    assert sum(v for v, _ in sink.calls) == pytest.approx(sum(first + second))
    assert len(sink.calls) == len(first) + len(second)


def test_rays_own_metric_objects_take_every_kind_without_a_running_ray() -> None:
    registry = MetricsRegistry("demo")
    registry.counter(REQUESTS).inc(("kit", "echo", "ok"))
    registry.gauge(BREAKER_STATE).set(("kit",), 0)
    registry.histogram(REQUEST_LATENCY).observe(("kit",), 0.01)
    RayExport(registry, RayMetricSinks()).flush()  # names, tags and types Ray accepts


async def test_the_export_loop_refreshes_read_gauges_before_each_flush() -> None:
    registry = MetricsRegistry("demo")
    sinks = Sinks()
    flushed = asyncio.Event()
    states = iter([0.0, 2.0])

    def refresh() -> None:
        value = next(states, None)
        if value is None:
            flushed.set()
            return
        registry.gauge(BREAKER_STATE).set(("kit",), value)

    loop = asyncio.create_task(export_forever(RayExport(registry, sinks), 0.001, refresh))
    try:
        async with asyncio.timeout(10):
            await flushed.wait()
    finally:
        loop.cancel()
    assert [v for v, _ in sinks.made[BREAKER_STATE.name].calls][:2] == [0.0, 2.0]
