"""The wrapper micro-benchmark measures every figure it names (never how fast)."""

from __future__ import annotations

import math

from benchmarks.wrapper_overhead import STACKS, measure


def test_every_wrapper_and_size_is_measured_as_a_positive_time_per_message() -> None:
    figures = measure(messages=128, rounds=1)
    assert {name for name, _ in figures} == set(STACKS)
    assert {size for _, size in figures} == {"small", "4 kB"}
    assert all(math.isfinite(us) and us > 0 for us in figures.values())
