"""The runner: every selected workload gets exactly one row, whatever its family did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report import Row, Side, Status
from benchmarks.runner import FAMILIES, BenchOptions, run_families, workload_ids
from benchmarks.workloads import BenchContext, Family, Skip, Workload
from cluster.cli import main

ONE = Workload("X1", "measured", "goal 1")
TWO = Workload("X2", "measured, then the family fails", "goal 2")
THREE = Workload("X3", "skipped", "goal 3")
FOUR = Workload("X4", "failed", "goal 4")


async def _measures_one_then_fails(ctx: BenchContext) -> None:
    if ctx.wants(ONE):
        side = Side("side", 1.0)
        ctx.emit(Row.compared(ONE.id, ONE.title, ONE.goal, "x", side, side))
    raise RuntimeError("the broker went away\nsecond line")


async def _skips(ctx: BenchContext) -> None:
    raise Skip("Kafka needs java")


async def _fails_at_once(ctx: BenchContext) -> None:
    raise ValueError("bad")


FAKES = (
    Family("first", (ONE, TWO), _measures_one_then_fails),
    Family("second", (THREE,), _skips),
    Family("third", (FOUR,), _fails_at_once),
)


def context(tmp_path: Path, selected: set[str]) -> BenchContext:
    return BenchContext(1.0, 1, 2, "unused", tmp_path, frozenset(selected))


async def test_a_skipped_or_failing_family_gives_its_rows_a_reason_and_the_rest_still_run(
    tmp_path: Path,
) -> None:
    rows = await run_families(context(tmp_path, {"X1", "X3", "X4"}), FAKES)

    assert [(r.id, r.status) for r in rows] == [
        ("X1", Status.MEASURED),
        ("X3", Status.SKIPPED),
        ("X4", Status.FAILED),
    ]
    assert rows[0].ratio == 1.0
    assert rows[1].reason == "Kafka needs java"
    assert rows[2].reason == "ValueError: bad"


async def test_rows_a_family_did_not_emit_before_failing_are_failed_with_its_reason(
    tmp_path: Path,
) -> None:
    rows = await run_families(context(tmp_path, {"X1", "X2"}), FAKES)

    # X1 was emitted before the failure and keeps its figures; X2 was never emitted.
    assert [(r.id, r.status, r.reason) for r in rows] == [
        ("X1", Status.MEASURED, None),
        ("X2", Status.FAILED, "RuntimeError: the broker went away"),
    ]


async def test_a_family_with_nothing_selected_does_not_run(tmp_path: Path) -> None:
    rows = await run_families(context(tmp_path, {"X3"}), FAKES)

    assert [r.id for r in rows] == ["X3"]


def test_every_workload_of_the_issue_has_a_row_and_b10_has_its_place() -> None:
    assert workload_ids(FAMILIES) == [f"B{n}" for n in range(1, 12)]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"only": frozenset({"B4", "B99"})}, "B99"),
        ({"duration_s": 0.0}, "--duration-s"),
        ({"rounds": 0}, "--rounds"),
    ],
)
def test_bad_options_are_refused_naming_what_is_wrong(
    options: dict[str, object], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        BenchOptions(**options)  # type: ignore[arg-type]


def test_raybus_bench_refuses_an_unknown_workload_before_starting_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench", "--only", "b4,B99"]) == 2

    err = capsys.readouterr().err
    assert "unknown workload(s) B99" in err
    assert "known: B1, B2" in err


def test_python_m_benchmarks_is_raybus_bench() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "B0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 2
    assert "raybus: bench: unknown workload(s) B0" in result.stderr
