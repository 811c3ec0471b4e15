"""Forwarding a registry to ``ray.util.metrics``, off the hot path.

Recording stays in-process (:mod:`cluster.metrics.registry`); :meth:`RayExport.flush`,
called every second or so by the actor's own timer, hands Ray what changed since the
last flush: a counter's increase, each gauge's value (Ray drops gauges not set for a
while), and a histogram's new observations. Ray's metrics agent then exports them on
the node's Prometheus endpoint at its own pace (``metrics_report_interval_ms``, 10 s by
default) - only where Ray runs its metrics agent, i.e. with ``ray[default]``
installed; a minimal Ray records and drops them.

Ray's histogram takes single observations only. The registry keeps each bucket's count
and sum, so a flush observes each bucket's mean once per new value in it: the bucket
counts and the total sum arrive exactly, for one cheap call per observation made in
the background rather than on the call's path.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Protocol

from cluster.metrics.registry import (
    Counter,
    Gauge,
    Histogram,
    HistogramSeries,
    Labels,
    MetricSpec,
    MetricsRegistry,
)

__all__ = ["EXPORT_INTERVAL_S", "MetricSinks", "RayExport", "RayMetricSinks", "export_forever"]

logger = logging.getLogger(__name__)

# Well under Ray's own 10 s report interval, so no report misses a second's worth.
EXPORT_INTERVAL_S = 1.0

Tags = dict[str, str]


class CounterSink(Protocol):
    def inc(self, value: float, tags: Tags) -> None: ...


class GaugeSink(Protocol):
    def set(self, value: float, tags: Tags) -> None: ...


class HistogramSink(Protocol):
    def observe(self, value: float, tags: Tags) -> None: ...


class MetricSinks(Protocol):
    """Makes the metric objects a flush records into (Ray's, or a test's)."""

    def counter(self, spec: MetricSpec) -> CounterSink: ...

    def gauge(self, spec: MetricSpec) -> GaugeSink: ...

    def histogram(self, spec: MetricSpec) -> HistogramSink: ...


class RayMetricSinks:
    """``ray.util.metrics`` objects, made once per family (Ray expects one per process)."""

    def counter(self, spec: MetricSpec) -> CounterSink:
        from ray.util.metrics import Counter as RayCounter

        sink: CounterSink = RayCounter(spec.ray_name, spec.help, spec.label_names)
        return sink

    def gauge(self, spec: MetricSpec) -> GaugeSink:
        from ray.util.metrics import Gauge as RayGauge

        sink: GaugeSink = RayGauge(spec.ray_name, spec.help, spec.label_names)
        return sink

    def histogram(self, spec: MetricSpec) -> HistogramSink:
        from ray.util.metrics import Histogram as RayHistogram

        sink: HistogramSink = RayHistogram(
            spec.ray_name, spec.help, list(spec.buckets), spec.label_names
        )
        return sink


class RayExport:
    """What one registry has recorded since the last flush, handed to the sinks."""

    def __init__(self, registry: MetricsRegistry, sinks: MetricSinks | None = None) -> None:
        self._registry = registry
        self._sinks = sinks or RayMetricSinks()
        self._counter_sinks: dict[str, CounterSink] = {}
        self._gauge_sinks: dict[str, GaugeSink] = {}
        self._histogram_sinks: dict[str, HistogramSink] = {}
        self._sent_counts: dict[tuple[str, Labels], float] = {}
        self._sent_histograms: dict[tuple[str, Labels], HistogramSeries] = {}
        self._tags: dict[tuple[str, Labels], Tags] = {}

    def flush(self) -> None:
        for family in self._registry.families:
            if isinstance(family, Counter):
                self._flush_counter(family)
            elif isinstance(family, Gauge):
                self._flush_gauge(family)
            else:
                self._flush_histogram(family)

    def _tags_for(self, spec: MetricSpec, labels: Labels) -> Tags:
        key = (spec.name, labels)
        tags = self._tags.get(key)
        if tags is None:
            values = (self._registry.bus, *labels)
            tags = self._tags[key] = dict(zip(spec.label_names, values, strict=True))
        return tags

    def _flush_counter(self, family: Counter) -> None:
        spec = family.spec
        sink = self._counter_sinks.get(spec.name)
        if sink is None:
            sink = self._counter_sinks[spec.name] = self._sinks.counter(spec)
        for labels, value in family.values.items():
            key = (spec.name, labels)
            delta = value - self._sent_counts.get(key, 0.0)
            if delta > 0:
                sink.inc(delta, self._tags_for(spec, labels))
                self._sent_counts[key] = value

    def _flush_gauge(self, family: Gauge) -> None:
        spec = family.spec
        sink = self._gauge_sinks.get(spec.name)
        if sink is None:
            sink = self._gauge_sinks[spec.name] = self._sinks.gauge(spec)
        for labels, value in family.values.items():
            sink.set(value, self._tags_for(spec, labels))

    def _flush_histogram(self, family: Histogram) -> None:
        spec = family.spec
        sink = self._histogram_sinks.get(spec.name)
        if sink is None:
            sink = self._histogram_sinks[spec.name] = self._sinks.histogram(spec)
        bounds = (-math.inf, *spec.buckets, math.inf)
        for labels, series in family.series.items():
            key = (spec.name, labels)
            sent = self._sent_histograms.get(key)
            if sent is None:
                sent = self._sent_histograms[key] = HistogramSeries.empty(len(spec.buckets))
            tags = self._tags_for(spec, labels)
            for i, count in enumerate(series.counts):
                new = count - sent.counts[i]
                if new <= 0:
                    continue
                mean = (series.sums[i] - sent.sums[i]) / new
                # Rounding must not carry the mean across the bucket's edges (lo, hi].
                value = min(bounds[i + 1], max(mean, math.nextafter(bounds[i], math.inf)))
                for _ in range(new):
                    sink.observe(value, tags)
                sent.counts[i] = count
                sent.sums[i] = series.sums[i]


async def export_forever(
    export: RayExport,
    interval_s: float = EXPORT_INTERVAL_S,
    refresh: Callable[[], None] | None = None,
) -> None:
    """Flush ``export`` every ``interval_s`` until cancelled; a failed flush is logged.

    ``refresh``, if given, runs first: it sets gauges that are read, not pushed.
    """
    while True:
        await asyncio.sleep(interval_s)  # the export period
        try:
            if refresh is not None:
                refresh()
            export.flush()
        except Exception:  # the exporter must outlive one bad flush
            logger.exception("exporting metrics to Ray failed")
