"""The metrics micro-benchmark measures every figure it names (never how fast)."""

from __future__ import annotations

import math

from benchmarks.metrics_overhead import measure


def test_every_figure_is_measured_as_a_positive_time_per_record() -> None:
    figures = measure(640)
    assert set(figures) == {
        "registry: counter inc",
        "registry: histogram observe",
        "router: metrics work per call",
        "broker worker: metrics work per call",
        "router: call, tallies dropped",
        "router: call, tallies recorded",
        "ray.util.metrics: Counter.inc",
        "RayExport: flush per observation",
    }
    assert all(math.isfinite(us) and us > 0 for us in figures.values())
