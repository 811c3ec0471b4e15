"""Snapshots as the Prometheus text exposition format (version 0.0.4).

https://prometheus.io/docs/instrumenting/exposition_formats/: one ``# HELP`` and
``# TYPE`` line per family, then one line per series; a histogram series is its
cumulative ``_bucket`` lines (``le`` upper bounds, ending at ``+Inf``), ``_sum`` and
``_count``. Label values escape backslash, double quote and newline; help text escapes
backslash and newline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from cluster.metrics.registry import FamilySnapshot, HistogramSeries, Labels

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(families: Iterable[FamilySnapshot]) -> str:
    """The families as one exposition page (families and series in a stable order)."""
    lines: list[str] = []
    for family in sorted(families, key=lambda f: f.spec.name):
        spec = family.spec
        names = spec.label_names
        lines.append(f"# HELP {spec.name} {_escape_help(spec.help)}")
        lines.append(f"# TYPE {spec.name} {spec.kind.value}")
        for labels in sorted(family.series):
            if len(labels) != len(names):
                raise ValueError(f"{spec.name}: labels {labels} do not match {names}")
            value = family.series[labels]
            if isinstance(value, HistogramSeries):
                lines.extend(_histogram_lines(spec.name, names, labels, spec.buckets, value))
            else:
                lines.append(f"{spec.name}{_labels(names, labels)} {_number(value)}")
    return "\n".join(lines) + "\n" if lines else ""


def _histogram_lines(
    name: str, names: Labels, labels: Labels, buckets: tuple[float, ...], series: HistogramSeries
) -> list[str]:
    lines = []
    cumulative = 0
    for bound, count in zip((*buckets, math.inf), series.counts, strict=True):
        cumulative += count
        le = _labels((*names, "le"), (*labels, _number(bound)))
        lines.append(f"{name}_bucket{le} {cumulative}")
    plain = _labels(names, labels)
    lines.append(f"{name}_sum{plain} {_number(series.total)}")
    lines.append(f"{name}_count{plain} {cumulative}")
    return lines


def _labels(names: Labels, values: Labels) -> str:
    pairs = ",".join(f'{n}="{_escape_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
