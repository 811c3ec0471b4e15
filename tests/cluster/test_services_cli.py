"""``raybus services``: the parser, and up/status/down end to end on a real moto server."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.cli import services as services_cli
from cluster.services.process import is_running
from cluster.services.state import ServiceName, load_state, state_path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raybus")
    services_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_up_parses_a_single_service_and_the_export_flag() -> None:
    args = _parser().parse_args(["services", "up", "--only", "sqs", "--export"])

    assert args.only is ServiceName.SQS
    assert args.export
    assert args.ready_timeout == 120.0
    assert callable(args.run)


def test_every_action_has_a_runner_and_defaults_to_all_services() -> None:
    for action in ("up", "down", "status"):
        args = _parser().parse_args(["services", action])
        assert callable(args.run)
        assert getattr(args, "only", None) is None


def test_an_unknown_service_or_a_missing_action_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["services", "up", "--only", "rabbitmq"])
    with pytest.raises(SystemExit):
        _parser().parse_args(["services"])


def _raybus(cache_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAYBUS_CACHE_DIR": str(cache_dir)}
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", "services", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.sqs
def test_up_leaves_a_detached_service_that_status_sees_and_down_stops(tmp_path: Path) -> None:
    up = _raybus(tmp_path, "up", "--only", "sqs", "--export")
    record = load_state(state_path(tmp_path)).services.get(ServiceName.SQS)
    try:
        assert up.returncode == 0, up.stderr
        assert record is not None
        assert up.stdout == f"export RAYBUS_SQS_ENDPOINT={record.endpoint}\n"
        assert record.endpoint.startswith("http://127.0.0.1:")
        assert is_running(record.pid, record.pid_start_ticks)  # it outlived `up`

        again = _raybus(tmp_path, "up", "--only", "sqs")
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stderr
        assert again.stdout == f"RAYBUS_SQS_ENDPOINT={record.endpoint}\n"

        status = _raybus(tmp_path, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "answers" in status.stdout

        down = _raybus(tmp_path, "down")
        assert down.returncode == 0, down.stderr
        assert f"sqs stopped (pid {record.pid})" in down.stdout
        assert not is_running(record.pid, record.pid_start_ticks)
        assert not record.temp_dir.exists()
        assert load_state(state_path(tmp_path)).services == {}
    finally:
        if record is not None and is_running(record.pid, record.pid_start_ticks):
            os.kill(record.pid, 9)


def test_services_up_without_moto_says_which_extra_to_install_in_one_line(tmp_path: Path) -> None:
    # A plain `pip install raybus` has no moto: hide it from a fresh interpreter.
    script = (
        "import sys; sys.modules['moto'] = None; from cluster.cli import main; "
        "sys.exit(main(['services', 'up', '--only', 'sqs']))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "RAYBUS_CACHE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    errors = [line for line in completed.stderr.splitlines() if line.startswith("raybus")]
    assert completed.returncode == 1, completed.stderr
    assert errors == [
        "raybus: services up: sqs: moto is not installed: pip install 'raybus[services]'"
    ], completed.stderr
    assert "Traceback" not in completed.stderr
