"""The encryption micro-benchmark measures every figure it names (never how fast)."""

from __future__ import annotations

import math

from benchmarks.encryption_overhead import SIZES, measure


def test_every_figure_is_measured_as_a_positive_time_per_message() -> None:
    figures = measure(50)
    assert set(figures) == {f"{kind} {size} B" for size in SIZES for kind in ("plain", "sealed")}
    assert all(math.isfinite(us) and us > 0 for us in figures.values())
