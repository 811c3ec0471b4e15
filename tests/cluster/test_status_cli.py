"""`raybus status`: every bus at a glance, one bus in detail, JSON, and --watch."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import ray

from cluster.bus import running_buses
from tests.cluster.bus_helpers import bus_config, running_bus, running_gateway

pytestmark = [pytest.mark.ray, pytest.mark.slow]

KIT = [{"name": "kit", "server": "cluster.examples.testkit:server", "warm_spares": 0}]
CLEAR_SCREEN = b"\x1b[H\x1b[2J"
CALC = [{"name": "calc", "command": [sys.executable, "-m", "cluster.examples.calculator"]}]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """The user's environment with a private cache (no `raybus up` buses of others)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAYBUS_CACHE_DIR"] = str(tmp_path)
    return env


def session_address() -> str:
    return str(ray.get_runtime_context().gcs_address)


async def raybus(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cluster.cli", *args, "--address", session_address(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    async with asyncio.timeout(180):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def row_of(table: str, bus: str) -> list[str]:
    rows = [line.split() for line in table.splitlines() if line.split()[:1] == [bus]]
    assert len(rows) == 1, table
    return rows[0]


@pytest.mark.usefixtures("ray_session")
async def test_status_without_a_name_lists_every_bus_with_its_gateway(
    cli_env: dict[str, str],
) -> None:
    served, plain = bus_config(KIT), bus_config(CALC)
    async with running_gateway(served) as url, running_bus(plain):
        code, table, err = await raybus(cli_env, "status")
        assert code == 0, err
        assert table.splitlines()[0].split() == [
            "bus", "backend", "pools", "workers", "queued", "oldest", "s", "in", "flight",
            "breaker", "gateway",
        ]  # fmt: skip
        totals = ["ray", "1", "1", "0", "0.00", "0", "closed"]  # backend .. breaker
        assert row_of(table, served.name) == [served.name, *totals, url]
        assert row_of(table, plain.name) == [plain.name, *totals, "-"]

        code, out, err = await raybus(cli_env, "status", "--json")
        assert code == 0, err
        buses = {row["bus"]: row for row in json.loads(out)["buses"]}
        assert buses[served.name] == {
            "bus": served.name,
            "ray_address": session_address(),
            "backend": "ray",
            "pools": 1,
            "workers": 1,
            "queued": 0,
            "oldest_age_s": 0.0,
            "in_flight": 0,
            "breakers": {"kit": "closed"},
            "gateways": [url],
        }
        assert buses[plain.name]["gateways"] == []


@pytest.mark.usefixtures("ray_session")
async def test_status_with_a_name_shows_that_bus_and_a_missing_one_names_those_running(
    cli_env: dict[str, str],
) -> None:
    config = bus_config(KIT)
    async with running_bus(config):
        code, text, err = await raybus(cli_env, "status", config.name)
        assert code == 0, err
        assert text.splitlines()[:2] == [
            f"bus {config.name} (ray backend)",
            "gateway none (`raybus up` serves one)",
        ]
        assert f"raybus/{config.name}/worker/kit/" in text

        code, out, err = await raybus(cli_env, "status", config.name, "--json")
        assert code == 0, err
        status: dict[str, Any] = json.loads(out)
        assert (status["bus"], status["backend"], status["gateways"]) == (config.name, "ray", [])
        assert status["pools"]["kit"]["workers"] == 1

        code, out, err = await raybus(cli_env, "status", "no-such-bus")
        assert (code, out) == (1, "")
        [line] = err.splitlines()
        assert line.startswith("raybus: no bus named 'no-such-bus' is running; running: ")
        assert config.name in line.split("running: ", 1)[1].split(", ")


@pytest.mark.usefixtures("ray_session")
async def test_with_no_bus_running_the_list_is_one_line_and_exit_0(
    cli_env: dict[str, str],
) -> None:
    if await running_buses():
        pytest.skip("an earlier test left a bus running on the session's Ray")
    code, out, err = await raybus(cli_env, "status")
    assert (code, out) == (0, "no bus is running\n"), err
    code, out, err = await raybus(cli_env, "status", "--json")
    assert (code, json.loads(out)) == (0, {"buses": []}), err


async def watch(env: dict[str, str], *args: str, snapshots: int) -> tuple[int, list[str]]:
    """Run `raybus status --watch` until it printed ``snapshots`` of them, then Ctrl-C it.

    Returns its exit code and the lines it printed (stdout is a pipe, not a terminal).
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cluster.cli", "status", *args, "--address", session_address(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(180):
            while sum(_is_snapshot_start(line) for line in lines) < snapshots:
                line = await process.stdout.readline()
                assert line, f"the watch ended early: {lines}"
                lines.append(line.decode().rstrip("\n"))
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            rest, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    lines += rest.decode().splitlines()
    assert process.returncode is not None
    return process.returncode, lines


def _is_snapshot_start(line: str) -> bool:
    return line.startswith(("raybus status at ", "{"))


@pytest.mark.usefixtures("ray_session")
async def test_watch_prints_a_snapshot_per_interval_without_terminal_codes_until_ctrl_c(
    cli_env: dict[str, str],
) -> None:
    config = bus_config(KIT)
    async with running_bus(config):
        code, lines = await watch(cli_env, config.name, "--watch", "0.5", snapshots=2)
        assert code == 0
        headings = [line for line in lines if line.startswith("raybus status at ")]
        assert len(headings) >= 2
        assert all(line.endswith(", every 0.5 s (Ctrl-C stops)") for line in headings)
        assert sum(line == f"bus {config.name} (ray backend)" for line in lines) >= 2
        assert not any("\x1b" in line for line in lines)

        code, lines = await watch(cli_env, "--json", "--watch", "0.5", snapshots=2)
        assert code == 0
        snapshots = [json.loads(line) for line in lines if line.startswith("{")]
        assert len(snapshots) >= 2
        for snapshot in snapshots:
            assert config.name in {row["bus"] for row in snapshot["buses"]}


@pytest.mark.usefixtures("ray_session")
async def test_on_a_terminal_watch_redraws_in_place(cli_env: dict[str, str]) -> None:
    config = bus_config(KIT)
    primary, secondary = pty.openpty()
    seen = bytearray()
    async with running_bus(config):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cluster.cli", "status", config.name, "--watch", "0.5",
            "--address", session_address(),
            stdout=secondary, stderr=asyncio.subprocess.PIPE, env=cli_env,
        )  # fmt: skip
        os.close(secondary)
        try:
            async with asyncio.timeout(180):
                while seen.count(CLEAR_SCREEN) < 2:
                    chunk = await asyncio.to_thread(os.read, primary, 4096)
                    assert chunk, "the watch ended early"
                    seen += chunk
            process.send_signal(signal.SIGINT)
            async with asyncio.timeout(60):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            os.close(primary)
    first_frame = seen.split(CLEAR_SCREEN)[1].decode()
    assert f"bus {config.name} (ray backend)" in first_frame
