"""`raybus start / call / status / stop` from separate processes against one cluster.

Each command is its own Ray driver: the bus started by the first outlives it, and the
later ones attach to it by name.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAYBUS = [sys.executable, "-m", "cluster.cli"]


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    head = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.ray_head"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert head.stdout is not None
    assert head.stdin is not None
    address = head.stdout.readline().strip()
    try:
        assert address, "the Ray head did not start"
        yield address
    finally:
        head.stdin.close()
        head.wait(timeout=60)


def raybus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RAYBUS, *args], capture_output=True, text=True, timeout=180, check=False
    )


def test_a_bus_started_by_one_process_is_used_and_stopped_by_others(
    ray_address: str, tmp_path: Path
) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text(
        "name: clitest\npools:\n  - name: kit\n    server: 'cluster.examples.testkit:server'\n"
    )
    started = raybus("start", str(config), "--address", ray_address)
    assert started.returncode == 0, started.stderr
    assert "clitest" in started.stdout

    called = raybus(
        "call", "clitest", "echo", '{"text": "attached by name"}', "--address", ray_address
    )
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["structuredContent"] == {"result": "attached by name"}

    status = raybus("status", "clitest", "--json", "--address", ray_address)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["pools"]["kit"]["workers"] == 1

    again = raybus("start", str(config), "--address", ray_address)
    assert again.returncode == 1
    assert "already running" in again.stderr

    stopped = raybus("stop", "clitest", "--address", ray_address)
    assert stopped.returncode == 0, stopped.stderr
    gone = raybus("call", "clitest", "echo", "{}", "--address", ray_address)
    assert gone.returncode == 1
    assert "no raybus actor named" in gone.stderr


def test_bad_arguments_are_refused_before_any_call(ray_address: str) -> None:
    result = raybus("call", "clitest", "echo", "[1, 2]", "--address", ray_address)
    assert result.returncode == 2
    assert "must be a JSON object" in result.stderr
