"""Rows: the ratio is raybus over the anchor, figures pool every round, output is complete."""

from __future__ import annotations

import json

import pytest

from benchmarks.measure import RoundResult
from benchmarks.report import Row, Side, Status, format_table, side_from_rounds


def rounds() -> list[RoundResult]:
    return [
        RoundResult(2.0, [10.0] * 20, cpu_s={"loadgen": 1.0}),  # 10 calls/s
        RoundResult(2.0, [30.0] * 60, errors=2, first_error="boom", cpu_s={"loadgen": 3.0}),
    ]


def test_a_side_pools_its_rounds_calls_per_second_latencies_and_cpu() -> None:
    side = side_from_rounds("raybus", rounds())

    assert side.value == 80 / 4.0  # every call over every second, not a mean of rates
    assert side.per_round == [10.0, 30.0]
    assert (side.p50_ms, side.p99_ms) == (30.0, 30.0)
    assert (side.calls, side.errors, side.first_error) == (80, 2, "boom")
    assert side.cpu_cores == {"loadgen": 1.0}


@pytest.mark.parametrize(("figure", "expected"), [("p50", 30.0), ("p99", 30.0)])
def test_a_side_can_be_read_by_a_latency_percentile(figure: str, expected: float) -> None:
    side = side_from_rounds("raybus", rounds(), figure=figure)

    assert side.value == expected
    assert side.per_round == [10.0, 30.0]


def test_the_ratio_is_raybus_over_anchor_with_the_range_of_the_rounds() -> None:
    raybus = Side("raybus", 50.0, per_round=[40.0, 60.0])
    anchor = Side("anchor", 100.0, per_round=[100.0, 100.0])

    row = Row.compared("B1", "echo", ">= 1.0x", "calls/s", raybus, anchor)

    assert row.ratio == 0.5
    assert row.ratio_range == (0.4, 0.6)


def test_the_table_shows_every_row_with_its_goal_and_a_skip_with_its_reason() -> None:
    measured = Row.compared(
        "B1",
        "HTTP echo",
        ">= 1.0x",
        "calls/s",
        Side("raybus", 32.0, 10.0, 20.0, per_round=[32.0]),
        Side("anchor", 98.0, 5.0, 9.0, per_round=[98.0]),
        met=False,
        notes=["first note", "second note"],
    )
    skipped = Row("B6", "Kafka", "p50 <= 10 ms", status=Status.SKIPPED, reason="no java")

    table = format_table([measured, skipped], "header line")

    lines = table.splitlines()
    assert lines[0] == "header line"
    b1 = next(line for line in lines if line.startswith("B1"))
    for cell in (
        "HTTP echo",
        "32.0 calls/s",
        "98.0 calls/s",
        "0.33x",
        "10.0 / 20.0",
        ">= 1.0x",
        "NO",
    ):
        assert cell in b1
    assert next(line for line in lines if line.startswith("B6")).endswith("skipped: no java")
    assert "first note" in table
    assert "second note" in table


def test_a_row_as_json_keeps_its_figures_and_status() -> None:
    row = Row.compared(
        "B4",
        "one caller",
        "p50 added <= 1 ms",
        "ms",
        Side("raybus", 2.0),
        Side("anchor", 1.0),
        met=False,
    )

    data = json.loads(json.dumps(row.as_dict()))

    assert data["status"] == "measured"
    assert data["ratio"] == 2.0
    assert data["raybus"]["value"] == 2.0
    assert data["anchor"]["label"] == "anchor"
    assert data["met"] is False
