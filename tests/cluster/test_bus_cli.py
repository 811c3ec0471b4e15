"""`raybus start / call / call --batch / status / stop` from separate processes, one cluster.

Each command is its own Ray driver: the bus started by the first outlives it, and the
later ones attach to it by name.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.terminal import run_with_terminal_stderr

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


# -- raybus call --batch -------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch_bus(ray_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = tmp_path_factory.mktemp("batch") / "bus.yaml"
    config.write_text(
        "name: batchtest\npools:\n  - name: kit\n    server: 'cluster.examples.testkit:server'\n"
    )
    started = raybus("start", str(config), "--address", ray_address)
    assert started.returncode == 0, started.stderr
    try:
        yield "batchtest"
    finally:
        raybus("stop", "batchtest", "--address", ray_address)


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _echoes(count: int) -> list[str]:
    return [json.dumps({"tool": "echo", "arguments": {"text": f"n{i}"}}) for i in range(count)]


def test_a_batch_streams_one_result_line_per_call_with_errors_in_place(
    ray_address: str, batch_bus: str, tmp_path: Path
) -> None:
    calls = _jsonl(
        tmp_path / "calls.jsonl",
        [
            '{"tool": "echo", "arguments": {"text": "first"}, "id": "a"}',
            "",  # blank lines are skipped, but counted as lines
            '{"tool": "nap", "arguments": {"seconds": 600}}',
            '{"tool": "fail", "arguments": {"reason": "on purpose"}, "id": 7}',
            '{"tool": "whoami"}',
        ],
    )
    done = raybus(
        "call", batch_bus, "--batch", str(calls), "--timeout", "10", "--address", ray_address
    )
    assert done.returncode == 1, done.stderr
    assert "2 of 4 calls failed" in done.stderr
    assert "call/s" not in done.stderr  # no progress bar: stderr is not a terminal
    by_line = {record["line"]: record for record in map(json.loads, done.stdout.splitlines())}
    assert sorted(by_line) == [1, 3, 4, 5]
    assert by_line[1]["id"] == "a"
    assert by_line[1]["result"]["structuredContent"] == {"result": "first"}
    assert by_line[3]["error"]["code"] == 1001  # the deadline passed: the error in place
    assert by_line[4]["id"] == 7
    assert by_line[4]["result"]["isError"] is True
    assert "pid" in by_line[5]["result"]["structuredContent"]


def test_a_batch_writes_its_results_to_a_file(
    ray_address: str, batch_bus: str, tmp_path: Path
) -> None:
    calls = _jsonl(tmp_path / "calls.jsonl", _echoes(200))
    results = tmp_path / "results.jsonl"
    done = raybus(
        "call", batch_bus, "--batch", str(calls), "--output", str(results),
        "--concurrency", "16", "--address", ray_address,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(r["line"] for r in records) == list(range(1, 201))
    assert all(r["result"]["structuredContent"] == {"result": f"n{r['line'] - 1}"} for r in records)


def test_a_malformed_line_is_refused_by_number_before_any_call(
    ray_address: str, batch_bus: str, tmp_path: Path
) -> None:
    executed = tmp_path / "executed.txt"
    record = {"tool": "record", "arguments": {"path": str(executed), "token": "ran"}}
    calls = _jsonl(
        tmp_path / "calls.jsonl",
        [json.dumps(record), json.dumps(record), '{"tool": "echo", "arguments": [1]}'],
    )
    refused = raybus("call", batch_bus, "--batch", str(calls), "--address", ray_address)
    assert refused.returncode == 2
    assert f'{calls} line 3: "arguments" must be a JSON object' in refused.stderr
    assert not executed.exists()  # lines 1 and 2 were never sent
    assert refused.stdout == ""

    # Checked before Ray is joined: no cluster or bus is needed to be told.
    _jsonl(calls, ['{"tool": "echo", "argument": {}}'])
    bad = raybus("call", "no_such_bus", "--batch", str(calls), "--address", "127.0.0.1:1")
    assert bad.returncode == 2
    assert f"{calls} line 1: unknown key 'argument'" in bad.stderr


def test_a_tool_the_bus_does_not_offer_is_refused_by_name_before_any_call(
    ray_address: str, batch_bus: str, tmp_path: Path
) -> None:
    executed = tmp_path / "executed.txt"
    record = {"tool": "record", "arguments": {"path": str(executed), "token": "ran"}}
    typo = {"tool": "ecoh", "arguments": {"text": "x"}}
    calls = _jsonl(tmp_path / "calls.jsonl", [json.dumps(record), json.dumps(typo)] * 50)
    refused = raybus("call", batch_bus, "--batch", str(calls), "--address", ray_address)
    assert refused.returncode == 2, refused.stderr
    assert f"{calls} line 2: bus 'batchtest' offers no tool 'ecoh'; its tools are [" in (
        refused.stderr
    )
    assert "'echo'" in refused.stderr
    assert not executed.exists()  # no line was sent, not even the good ones before it
    assert refused.stdout == ""


def test_a_batch_for_a_bus_that_is_not_running_fails_naming_it_before_any_call(
    ray_address: str, tmp_path: Path
) -> None:
    calls = _jsonl(tmp_path / "calls.jsonl", _echoes(5))
    refused = raybus("call", "no_such_bus", "--batch", str(calls), "--address", ray_address)
    assert refused.returncode == 1
    assert "no raybus actor named" in refused.stderr
    assert "no_such_bus" in refused.stderr
    assert refused.stdout == ""


def test_a_batch_shows_a_progress_bar_when_stderr_is_a_terminal(
    ray_address: str, batch_bus: str, tmp_path: Path
) -> None:
    calls = _jsonl(tmp_path / "calls.jsonl", _echoes(40))
    code, stdout, terminal = run_with_terminal_stderr(
        [*RAYBUS, "call", batch_bus, "--batch", str(calls), "--address", ray_address],
        timeout_s=180,
    )
    assert code == 0, terminal
    assert len(stdout.splitlines()) == 40
    assert re.search(r"40/40 \[[0-9:]+<[0-9:]+, +[0-9.]+call/s\]", terminal), terminal
