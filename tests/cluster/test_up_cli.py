"""`raybus up` as a user runs it: its own local Ray, HTTP or stdio, stopped by a signal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import mcp
import pytest
from mcp.client.stdio import StdioServerParameters

from benchmarks.processes import descendants
from cluster.cli.local_buses import local_bus_address
from tests.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CONFIG = """
name: uptest
pools:
  - name: kit
    server: "cluster.examples.testkit:server"
gateway:
  port: {port}
"""


_RAY_MONITOR = "ray/autoscaler/_private/monitor.py"


def _running(root: int, script: str) -> int:
    """How many processes below ``root`` run ``script`` (read from ``/proc``)."""
    count = 0
    for pid in descendants(root):
        with contextlib.suppress(OSError):  # gone meanwhile
            count += script in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    return count


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serving_up(
    config: Path, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`raybus up CONFIG` in a subprocess, once it says it serves; killed if still up after."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cluster.cli",
        "up",
        str(config),
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stderr is not None
        said: list[bytes] = []  # what it said before it served, for a failure's report
        async with asyncio.timeout(120):
            while b"serving MCP at" not in (line := await process.stderr.readline()):
                assert line, f"raybus up exited before serving: {b''.join(said).decode()}"
                said.append(line)
        yield process
    finally:
        if process.returncode is None:
            process.kill()


async def test_raybus_up_serves_http_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "bus.yaml"
    config.write_text(CONFIG.format(port=port))
    async with serving_up(config) as process:
        async with mcp.Client(f"http://127.0.0.1:{port}/mcp") as client:
            result = await client.call_tool("echo", {"text": "over http"})
        assert result.structured_content == {"result": "over http"}
        # Its lean Ray started without the autoscaler's monitor; serving, it starts it
        # (what `ray status` reads), one only.
        await wait_until(lambda: _running(process.pid, _RAY_MONITOR) > 0)
        assert _running(process.pid, _RAY_MONITOR) == 1
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(120):
            assert await process.wait() == 0


async def test_raybus_up_stdio_serves_a_stdio_client(tmp_path: Path) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text(CONFIG.format(port=0))
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "cluster.cli", "up", "--stdio", str(config)]
    )
    async with asyncio.timeout(180), mcp.Client(params, mode="legacy") as client:
        tools = await client.list_tools()
        assert "echo" in {t.name for t in tools.tools}
        result = await client.call_tool("echo", {"text": "over stdio"})
        assert result.structured_content == {"result": "over stdio"}


def test_a_non_loopback_bind_without_authentication_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text(CONFIG.format(port=0) + "  host: 0.0.0.0\n")
    result = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "up", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "refusing to bind 0.0.0.0" in result.stderr


def cli_env(cache_dir: Path) -> dict[str, str]:
    """The user's environment with a private cache (where `up` claims bus names)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAYBUS_CACHE_DIR"] = str(cache_dir)
    return env


def run_cli(
    *args: str, cache_dir: Path, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env=cli_env(cache_dir),
    )


def test_a_busy_port_is_refused_in_one_line_before_anything_starts(tmp_path: Path) -> None:
    config = tmp_path / "bus.yaml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config.write_text(CONFIG.format(port=port))
        result = run_cli("up", str(config), cache_dir=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"raybus: cannot serve MCP on 127.0.0.1:{port}: Address already in use"
    ]


def test_a_misspelled_server_is_named_with_its_pool_before_ray_starts(tmp_path: Path) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text(CONFIG.format(port=0).replace("testkit:server", "testkitt:server"))
    result = run_cli("up", str(config), cache_dir=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "raybus: pool 'kit' failed to start: No module named 'cluster.examples.testkitt'"
    ]


QUITS = """
name: quits{suffix}
pools:
  - name: kit
    server: "cluster.examples.testkit:server"
  - name: broken
    command: ["{python}", "-c", "import sys; sys.exit('missing setting X')"]
gateway:
  port: 0
"""


def test_a_server_that_exits_at_once_ends_start_up_with_the_pool_and_reason(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text(QUITS.format(suffix=os.getpid(), python=sys.executable))
    # The bound is the test's patience on a loaded machine, far below start-up's 120 s
    # timeout that used to be the only way this ended.
    result = run_cli("up", str(config), cache_dir=tmp_path, timeout_s=100)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("raybus: pool 'broken' failed to start: ")
    assert "missing setting X" in last
    assert "did not finish within" not in result.stderr


UNSCHEDULABLE = """
name: stuck{suffix}
pools:
  - name: kit
    server: "cluster.examples.testkit:server"
    num_cpus: 64   # more than this Ray has: the worker never starts
gateway:
  port: 0
"""


async def test_sigint_while_the_bus_starts_stops_it_cleanly(tmp_path: Path) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text(UNSCHEDULABLE.format(suffix=os.getpid()))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cluster.cli",
        "up",
        str(config),
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(tmp_path),
    )
    try:
        # Ray is up once `up` records where its bus runs: the start is under way.
        record = tmp_path / "buses" / f"stuck{os.getpid()}.json"
        async with asyncio.timeout(120):
            while not record.exists():  # noqa: ASYNC110 - a file another process writes
                await asyncio.sleep(0.1)
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            assert await process.wait() == 1
        assert process.stderr is not None
        stderr = (await process.stderr.read()).decode()
        assert "was interrupted; what had started was stopped" in stderr
        assert not record.exists()
    finally:
        if process.returncode is None:
            process.kill()


async def test_a_second_bus_of_the_same_name_is_refused_and_the_cli_finds_the_first(
    tmp_path: Path,
) -> None:
    name = f"dup{os.getpid()}"
    config = tmp_path / "bus.yaml"
    config.write_text(CONFIG.format(port=free_port()).replace("uptest", name))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cluster.cli",
        "up",
        str(config),
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(tmp_path),
    )
    try:
        assert process.stderr is not None
        async with asyncio.timeout(120):
            while b"serving MCP at" not in (line := await process.stderr.readline()):
                assert line, "raybus up exited before serving"
        second = tmp_path / "second.yaml"
        second.write_text(CONFIG.format(port=0).replace("uptest", name))
        refused = await asyncio.to_thread(run_cli, "up", str(second), cache_dir=tmp_path)
        assert refused.returncode == 2
        [refusal] = refused.stderr.strip().splitlines()
        assert refusal.startswith(f"raybus: a bus named {name!r} is already running on this")
        status = await asyncio.to_thread(run_cli, "status", name, cache_dir=tmp_path)
        assert status.returncode == 0, status.stderr
        assert f"bus {name}" in status.stdout
        assert "kit" in status.stdout
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(120):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()


@pytest.fixture
def other_local_ray() -> Iterator[str]:
    """A cluster started on this machine (by cluster_utils, as notebooks and `ray start`
    do): what a bare ``ray.init()`` would join."""
    head = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.ray_head"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert head.stdout is not None
    assert head.stdin is not None
    try:
        address = head.stdout.readline().strip()
        assert address, "the other Ray did not start"
        yield address
    finally:
        head.stdin.close()
        head.wait(timeout=60)


async def test_raybus_up_starts_its_own_ray_beside_another_local_one(
    tmp_path: Path, other_local_ray: str
) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text(CONFIG.format(port=free_port()).replace("uptest", "ownray"))
    async with serving_up(config, cli_env(tmp_path)) as process:
        own_address = local_bus_address("ownray", cache_dir=tmp_path)
        assert own_address is not None
        assert own_address != other_local_ray
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(120):
            assert await process.wait() == 0
