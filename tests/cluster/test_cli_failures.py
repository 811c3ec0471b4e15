"""How `raybus` fails: one line `raybus: ...` on stderr, or the traceback with --debug."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import cluster.cli.config as config_cli
from cluster.cli import main
from cluster.cli.failures import report, set_debug
from cluster.config import ConfigError
from transports.errors import ConnectionClosed


@pytest.fixture(autouse=True)
def no_debug() -> Iterator[None]:
    yield
    set_debug(False)  # main sets it per run; a test's --debug must not leak into the next


def test_a_bus_error_is_its_own_message_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert report(ConnectionClosed("no raybus actor named 'x' is running"), 1) == 1
    assert capsys.readouterr().err == "raybus: no raybus actor named 'x' is running\n"


def test_an_unexpected_error_is_one_line_naming_its_type_and_pointing_at_debug(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report(RuntimeError("first line\n  more detail\n"), 1)
    assert capsys.readouterr().err == (
        "raybus: unexpected error: RuntimeError: first line "
        "(run `raybus --debug ...` for the traceback)\n"
    )


def test_an_error_raised_in_an_actor_shows_the_original_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class RayTaskErrorLike(Exception):
        """What Ray raises for a remote failure: its text is the remote traceback."""

        def __init__(self, cause: BaseException) -> None:
            super().__init__("Traceback (most recent call last):\n  File ...")
            self.cause = cause

    report(RayTaskErrorLike(ConfigError("bus.yaml", ["pools[0]: bad"])), 1)
    assert capsys.readouterr().err == (
        "raybus: invalid configuration in bus.yaml:\n  pools[0]: bad\n"
    )


@pytest.fixture
def crashing_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """`raybus config check` meets a bug: an exception no command expects."""

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something no command expects")

    monkeypatch.setattr(config_cli, "check_config", crash)


@pytest.mark.usefixtures("crashing_check")
def test_main_turns_an_unexpected_exception_into_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config", "check", "bus.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "raybus: unexpected error: RuntimeError: something no command expects (run "
        "`raybus --debug ...` for the traceback)"
    ]


@pytest.mark.usefixtures("crashing_check")
@pytest.mark.parametrize(
    "argv",
    [
        ["--debug", "config", "check", "bus.yaml"],
        ["config", "check", "bus.yaml", "--debug"],  # after the command reads as naturally
    ],
)
def test_debug_shows_the_traceback_instead(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "in crash" in err
    assert err.rstrip().endswith("RuntimeError: something no command expects")
    assert "raybus: unexpected error" not in err


def test_ctrl_c_is_one_line_and_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(config_cli, "check_config", interrupted)
    assert main(["config", "check", "bus.yaml"]) == 130
    assert capsys.readouterr().err == "raybus: interrupted\n"


def _raybus(*args: str, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "RAYBUS_CACHE_DIR": str(cache_dir)},
    )


def test_a_refused_start_is_one_line_and_with_debug_its_traceback(tmp_path: Path) -> None:
    # Refused before Ray starts: the misspelled module is found missing by the preflight.
    config = tmp_path / "bus.yaml"
    config.write_text(
        "name: debugged\npools:\n  - name: kit\n    server: 'cluster.examples.testkitt:server'\n"
    )
    plain = _raybus("up", str(config), cache_dir=tmp_path)
    assert plain.returncode == 2
    assert plain.stderr.splitlines() == [
        "raybus: pool 'kit' failed to start: No module named 'cluster.examples.testkitt'"
    ]

    debugged = _raybus("--debug", "up", str(config), cache_dir=tmp_path)
    assert debugged.returncode == 2
    assert debugged.stderr.startswith("Traceback (most recent call last):")
    assert "check_pools" in debugged.stderr  # where it was raised
    assert debugged.stderr.rstrip().splitlines()[-1] == (
        "cluster.ray_actors.worker.PoolStartFailed: pool 'kit' failed to start: "
        "No module named 'cluster.examples.testkitt'"
    )


def test_up_warns_of_a_region_pool_its_workers_may_leave_before_it_starts(tmp_path: Path) -> None:
    # The warning comes before the preflight (which then refuses the misspelled module:
    # no Ray is started for this test).
    config = tmp_path / "bus.yaml"
    config.write_text(
        "name: regional\n"
        "router: {regions: {label: region}}\n"
        "pools:\n"
        "  - {name: eu, server: 'cluster.examples.testkitt:server', labels: {region: eu}}\n"
    )
    refused = _raybus("up", str(config), cache_dir=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "raybus: warning: pools[0]: labels.region=eu keeps calls on this pool, not this pool "
        "on eu nodes; add label_selector: {region: eu}",
        "raybus: pool 'eu' failed to start: No module named 'cluster.examples.testkitt'",
    ]
