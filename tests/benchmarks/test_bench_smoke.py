"""`raybus bench --json` end to end on the session's Ray: the shape of what it prints.

What is checked is that the cheapest in-process row (B4) and one HTTP row (B1: `raybus
up`, the SDK's own server and the load generator, each a process) are measured and
reported completely - never how fast anything was.
"""

from __future__ import annotations

import json

import pytest

from cluster.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SIDE_FIELDS = {"label", "value", "p50_ms", "p99_ms", "calls", "errors", "per_round", "cpu_cores"}


def test_raybus_bench_json_prints_one_object_with_a_complete_row_per_workload(
    ray_session: None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--only", "B4,B1", "--duration-s", "1", "--rounds", "1", "--json"]

    assert main(argv) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["settings"] == {"duration_s": 1.0, "rounds": 1, "only": ["B1", "B4"]}
    assert report["machine"]["cores"] >= 1
    assert [row["id"] for row in report["rows"]] == ["B1", "B4"]
    for row in report["rows"]:
        assert row["status"] == "measured", row["reason"]
        assert isinstance(row["met"], bool)
        assert row["goal"]
        for side in (row["raybus"], row["anchor"]):
            assert set(side) >= SIDE_FIELDS
            assert side["calls"] > 0
            assert side["errors"] == 0, side["first_error"]
            assert side["value"] > 0
            assert side["p50_ms"] <= side["p99_ms"]
        assert row["ratio"] == pytest.approx(row["raybus"]["value"] / row["anchor"]["value"])
    b1, b4 = report["rows"]
    assert b1["unit"] == "calls/s"
    # The load generator's CPU is reported on both sides of an HTTP row.
    assert "loadgen" in b1["raybus"]["cpu_cores"]
    assert "loadgen" in b1["anchor"]["cpu_cores"]
    assert b4["unit"] == "ms"
    assert "added_p50_ms" in b4["details"]
