"""`python -m cluster.examples.batch_scoring`: a progress bar on a terminal, none when piped.

The example runs as a person runs it, in its own process, joined to the session's Ray
(one Ray on the machine) and starting and stopping its own bus.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import ray

from tests.cluster.terminal import run_with_terminal_stderr

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROWS = 600
EMPTY_REVIEWS = len(range(0, ROWS, 97))  # the example's bad rows: ids 0, 97, 194, ...
# Bounds a hang; a healthy run takes seconds plus a bus start.
RUN_TIMEOUT_S = 300


@pytest.fixture
def example(ray_session: None) -> list[str]:
    address = ray.get_runtime_context().gcs_address
    return [
        sys.executable, "-m", "cluster.examples.batch_scoring", "--address", address,
        "--rows", str(ROWS), "--actors", "1", "--batch-size", "100",
    ]  # fmt: skip


def test_the_example_shows_count_rate_and_eta_when_stderr_is_a_terminal(
    example: list[str],
) -> None:
    code, stdout, terminal = run_with_terminal_stderr(example, timeout_s=RUN_TIMEOUT_S)
    assert code == 0, terminal
    assert json.loads(stdout)["rows"] == ROWS
    # tqdm's "count/total [elapsed<ETA, rate]"
    assert re.search(rf"{ROWS}/{ROWS} \[[0-9:]+<[0-9:]+, +[0-9.]+row/s\]", terminal), terminal


def test_the_example_prints_no_progress_when_stderr_is_not_a_terminal(
    example: list[str],
) -> None:
    done = subprocess.run(
        example, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rows"] == ROWS
    assert sum(summary["errors"].values()) == EMPTY_REVIEWS
    assert f"/{ROWS}" not in done.stderr
    assert "row/s" not in done.stderr
