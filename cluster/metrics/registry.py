"""In-process metrics: counters, gauges and histograms kept as plain numbers.

Each actor (router, autoscaler, gateway replica) owns one :class:`MetricsRegistry`.
Recording is a dict update in the actor's own process - no Ray call, no lock (one event
loop owns it) - so the hot path pays well under a microsecond per record. Two readers
take it from there, both off the hot path:

* :class:`~cluster.metrics.ray_export.RayExport` forwards what changed to
  ``ray.util.metrics`` every second or so, for Ray's Prometheus endpoint;
* :meth:`MetricsRegistry.snapshot` hands a copy (plain, picklable data) to ``raybus up
  --metrics-port``, which merges the actors' snapshots into one Prometheus page.

Every series carries the ``bus`` label first; families declare their other labels, and
callers pass those values as a tuple in the declared order.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "Counter",
    "FamilySnapshot",
    "Gauge",
    "Histogram",
    "HistogramSeries",
    "Labels",
    "MetricKind",
    "MetricSpec",
    "MetricsRegistry",
    "merge",
]

Labels = tuple[str, ...]


class MetricKind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family: its Prometheus name, kind, help text and labels.

    Attributes:
        labels: label names besides ``bus`` (always the first label).
        buckets: a histogram's bucket upper bounds, ascending (``+Inf`` is implied).
    """

    name: str
    kind: MetricKind
    help: str
    labels: Labels = ()
    buckets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind is MetricKind.HISTOGRAM and (
            not self.buckets or list(self.buckets) != sorted(set(self.buckets))
        ):
            raise ValueError(f"histogram {self.name} needs ascending, distinct buckets")
        if self.kind is MetricKind.COUNTER and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name} must end in _total")

    @property
    def label_names(self) -> Labels:
        return ("bus", *self.labels)

    @property
    def ray_name(self) -> str:
        """The name given to ``ray.util.metrics``: its exporter adds ``_total`` back."""
        return self.name.removesuffix("_total")


@dataclass(slots=True)
class HistogramSeries:
    """One histogram series: per-bucket counts and sums (the last bucket is ``+Inf``).

    Per-bucket sums (not only the total) let an exporter that takes single observations
    replay a batch exactly: the mean of a bucket's values lies inside that bucket.
    """

    counts: list[int]
    sums: list[float]

    @classmethod
    def empty(cls, buckets: int) -> HistogramSeries:
        return cls([0] * (buckets + 1), [0.0] * (buckets + 1))

    @property
    def count(self) -> int:
        return sum(self.counts)

    @property
    def total(self) -> float:
        return sum(self.sums)

    def copy(self) -> HistogramSeries:
        return HistogramSeries(list(self.counts), list(self.sums))

    def add(self, other: HistogramSeries) -> None:
        for i, (n, s) in enumerate(zip(other.counts, other.sums, strict=True)):
            self.counts[i] += n
            self.sums[i] += s


class Counter:
    """A monotonically increasing count per label tuple."""

    __slots__ = ("spec", "values")

    def __init__(self, spec: MetricSpec) -> None:
        self.spec = spec
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), value: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + value


class Gauge:
    """The latest value per label tuple."""

    __slots__ = ("spec", "values")

    def __init__(self, spec: MetricSpec) -> None:
        self.spec = spec
        self.values: dict[Labels, float] = {}

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value


class Histogram:
    """Observations counted into the spec's buckets per label tuple."""

    __slots__ = ("_bounds", "series", "spec")

    def __init__(self, spec: MetricSpec) -> None:
        self.spec = spec
        self._bounds = list(spec.buckets)
        self.series: dict[Labels, HistogramSeries] = {}

    def observe(self, labels: Labels, value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = HistogramSeries.empty(len(self._bounds))
        # Prometheus buckets are upper-inclusive (le): the first bound >= value.
        index = bisect_left(self._bounds, value)
        series.counts[index] += 1
        series.sums[index] += value

    def observe_many(self, labels: Labels, values: Iterable[float]) -> None:
        for value in values:
            self.observe(labels, value)


Family = Counter | Gauge | Histogram
SeriesValue = float | HistogramSeries


@dataclass(frozen=True, slots=True)
class FamilySnapshot:
    """A family's series at one moment; label tuples include the bus first."""

    spec: MetricSpec
    series: dict[Labels, SeriesValue] = field(default_factory=dict)


class MetricsRegistry:
    """One process's metric families, all labelled with ``bus``.

    Not thread-safe: owned by one actor's event loop, like the state it measures.
    """

    def __init__(self, bus: str) -> None:
        self.bus = bus
        self._families: dict[str, Family] = {}

    def counter(self, spec: MetricSpec) -> Counter:
        family = self._family(spec, MetricKind.COUNTER)
        assert isinstance(family, Counter)
        return family

    def gauge(self, spec: MetricSpec) -> Gauge:
        family = self._family(spec, MetricKind.GAUGE)
        assert isinstance(family, Gauge)
        return family

    def histogram(self, spec: MetricSpec) -> Histogram:
        family = self._family(spec, MetricKind.HISTOGRAM)
        assert isinstance(family, Histogram)
        return family

    @property
    def families(self) -> list[Family]:
        return list(self._families.values())

    def snapshot(self) -> list[FamilySnapshot]:
        """A copy of every series, safe to pickle and to read while recording goes on."""
        bus = (self.bus,)
        snapshots = []
        for family in self._families.values():
            series: dict[Labels, SeriesValue]
            if isinstance(family, Histogram):
                series = {bus + k: v.copy() for k, v in family.series.items()}
            else:
                series = {bus + k: v for k, v in family.values.items()}
            snapshots.append(FamilySnapshot(family.spec, series))
        return snapshots

    def _family(self, spec: MetricSpec, kind: MetricKind) -> Family:
        if spec.kind is not kind:
            raise TypeError(f"{spec.name} is a {spec.kind}, not a {kind}")
        family = self._families.get(spec.name)
        if family is None:
            family = self._families[spec.name] = _FAMILY_OF[kind](spec)
        elif family.spec != spec:
            raise ValueError(f"{spec.name} is already registered with another definition")
        return family


_FAMILY_OF: dict[MetricKind, type[Counter] | type[Gauge] | type[Histogram]] = {
    MetricKind.COUNTER: Counter,
    MetricKind.GAUGE: Gauge,
    MetricKind.HISTOGRAM: Histogram,
}


def merge(sources: Iterable[Sequence[FamilySnapshot]]) -> list[FamilySnapshot]:
    """One snapshot from several processes' (e.g. every gateway replica's).

    Series with the same name and labels are added up: counters and histograms count
    events, and each gauge series has one owner (the autoscaler, the router), so adding
    never mixes two readings. A family whose definition differs from the first seen
    (processes of different versions) is left out rather than mixed.
    """
    merged: dict[str, FamilySnapshot] = {}
    for snapshots in sources:
        for snapshot in snapshots:
            into = merged.get(snapshot.spec.name)
            if into is None:
                into = merged[snapshot.spec.name] = FamilySnapshot(snapshot.spec)
            elif into.spec != snapshot.spec:
                continue
            for labels, value in snapshot.series.items():
                _add(into.series, labels, value)
    return list(merged.values())


def _add(series: dict[Labels, SeriesValue], labels: Labels, value: SeriesValue) -> None:
    present = series.get(labels)
    if isinstance(value, HistogramSeries):
        if isinstance(present, HistogramSeries):
            present.add(value)
        else:
            series[labels] = value.copy()
    else:
        series[labels] = value + (present if isinstance(present, float | int) else 0.0)
