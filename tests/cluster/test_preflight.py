"""What `raybus up` checks before it starts Ray: the pools' modules and commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from cluster.cli.preflight import check_pools
from cluster.config import parse_config
from cluster.ray_actors.worker import PoolStartFailed, server_command


def config_with(pool: dict[str, Any]) -> Any:
    return parse_config({"name": "pre", "pools": [pool]})


@pytest.mark.parametrize(
    ("pool", "reason"),
    [
        (
            {"name": "kit", "server": "cluster.examples.testkitt:server"},
            "No module named 'cluster.examples.testkitt'",
        ),
        ({"name": "kit", "server": "nopackage.mod:server"}, "No module named 'nopackage'"),
        ({"name": "fns", "tools": "cluster.examples.nofunctions"}, "nofunctions"),
        ({"name": "calc", "command": ["raybus-no-such-command"]}, "is not on PATH"),
        ({"name": "calc", "command": ["/no/such/server"]}, "does not exist"),
    ],
)
def test_a_pool_whose_server_cannot_be_found_is_named_with_the_reason(
    pool: dict[str, Any], reason: str
) -> None:
    with pytest.raises(PoolStartFailed) as caught:
        check_pools(config_with(pool))
    assert str(caught.value).startswith(f"pool {pool['name']!r} failed to start: ")
    assert reason in str(caught.value)


def test_the_pools_own_path_is_where_its_command_is_looked_up(tmp_path: Path) -> None:
    server = tmp_path / "my-mcp-server"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    with pytest.raises(PoolStartFailed):
        check_pools(config_with({"name": "calc", "command": [server.name], "env": {"PATH": "/"}}))
    check_pools(
        config_with({"name": "calc", "command": [server.name], "env": {"PATH": str(tmp_path)}})
    )


@pytest.mark.parametrize("program", ["python", "python3"])
def test_a_bare_python_command_is_the_workers_own_interpreter_whatever_the_path(
    program: str,
) -> None:
    # A venv's raybus run without the venv on PATH found the system Python, which lacks
    # the server's packages (the demo's calc pool failed with "No module named 'mcp'").
    assert server_command([program, "-m", "calc"]) == [sys.executable, "-m", "calc"]
    assert server_command(["/usr/bin/python3", "-m", "calc"]) == ["/usr/bin/python3", "-m", "calc"]
    check_pools(config_with({"name": "calc", "command": [program], "env": {"PATH": "/"}}))


def test_modules_in_the_working_directory_are_found_as_ray_workers_find_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_local_server.py").write_text("server = None\n")
    monkeypatch.chdir(tmp_path)
    check_pools(config_with({"name": "mine", "server": "my_local_server:server"}))
    assert "my_local_server" not in sys.modules  # found, not imported


def test_a_pool_runtime_env_pythonpath_is_searched_as_its_workers_will(tmp_path: Path) -> None:
    (tmp_path / "elsewhere_server.py").write_text("server = None\n")
    pool = {"name": "far", "server": "elsewhere_server:server"}
    with pytest.raises(PoolStartFailed):
        check_pools(config_with(pool))
    env = {"env_vars": {"PYTHONPATH": str(tmp_path)}}
    check_pools(config_with({**pool, "runtime_env": env}))


def test_code_ray_ships_to_the_workers_is_left_to_the_watched_start() -> None:
    shipped = {"py_modules": ["s3://bucket/far.zip"]}
    check_pools(config_with({"name": "far", "server": "far_away:server", "runtime_env": shipped}))
