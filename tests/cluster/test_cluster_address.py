"""`raybus up --address` and `raybus start --address` against a cluster `ray start` set up.

The head is a real `ray start --head --block` in a subprocess of its own session, with
its own temp dir (so the address file `ray start` writes never points this machine's
other Ray users, the test session's included, at it) and its own ports; teardown
signals that process group only. It requires a token, as `ray start` does by default:
its own (``RAY_AUTH_TOKEN``), never the machine's ``~/.ray/auth_token``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mcp
import pytest

from tests.cluster.test_up_cli import cli_env
from tests.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).parent / "ray")
# Bounds on waiting, sized for a cold, loaded 2-core machine; they measure nothing.
HEAD_START_S = 180.0
HEAD_STOP_S = 60.0
TOKEN_AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}

BUS = """
name: {name}
pools:
  - name: kit
    server: "cluster.examples.testkit:server"
    num_cpus: 0.5
gateway:
  port: 0
"""


@pytest.fixture(scope="module")
def head_address() -> Iterator[str]:
    # Short: Ray's Unix sockets live under it and their paths are limited to 107 bytes.
    temp = Path(tempfile.mkdtemp(prefix="rbh-", dir="/tmp"))
    log = (temp / "ray-start.log").open("w")
    command = [RAY, "start", "--head", "--block", "--temp-dir", str(temp), "--num-cpus", "2"]
    own_ports = ["--port", "0", "--dashboard-agent-listen-port", "0"]  # any free ones
    quiet = ["--include-dashboard", "false", "--disable-usage-stats"]
    head = subprocess.Popen(
        [*command, *own_ports, *quiet],
        # Nothing runs on it at teardown: Ray's graceful drain waited out its 30 s
        # default there (no actor left; measured 33 s of the suite's wall time).
        env={**os.environ, **TOKEN_AUTH, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "2"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: teardown signals only that
    )
    address_file = temp / "ray_current_cluster"  # written by `ray start` once it is up
    try:
        asyncio.run(
            wait_until(lambda: address_file.exists() or head.poll() is not None, HEAD_START_S)
        )
        assert head.poll() is None, (temp / "ray-start.log").read_text()[-3000:]
        yield address_file.read_text().strip()
    finally:
        _stop(head)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _stop(head: subprocess.Popen[bytes]) -> None:
    """SIGTERM: `ray start --block` stops what it started; SIGKILL the group if it hangs."""
    if head.poll() is None:
        os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=HEAD_STOP_S)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=HEAD_STOP_S)


def raybus(
    *args: str, cache: Path, env: dict[str, str] = TOKEN_AUTH
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        capture_output=True,
        text=True,
        timeout=HEAD_START_S,
        check=False,
        env=cli_env(cache) | env,
    )


async def test_raybus_up_joins_a_running_cluster_by_address_and_serves_a_call(
    head_address: str, tmp_path: Path
) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text(BUS.format(name="upaddress"))
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "cluster.cli", "up", str(config), "--address", head_address],
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(tmp_path) | TOKEN_AUTH,
    )
    try:
        assert process.stderr is not None
        async with asyncio.timeout(HEAD_START_S):
            while b"serving MCP at" not in (line := await process.stderr.readline()):
                assert line, "raybus up exited before serving"
        url = re.search(r"http://\S+", line.decode())
        assert url is not None
        async with mcp.Client(url.group(0)) as client:
            result = await client.call_tool("echo", {"text": "on a real cluster"})
        assert result.structured_content == {"result": "on a real cluster"}
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(HEAD_STOP_S):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()


def test_raybus_start_call_status_stop_by_address(head_address: str, tmp_path: Path) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text(BUS.format(name="startaddress"))
    address = ["--address", head_address]
    started = raybus("start", str(config), *address, cache=tmp_path)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        called = raybus("call", "startaddress", "echo", '{"text": "hi"}', *address, cache=tmp_path)
        assert called.returncode == 0, called.stderr[-3000:]
        assert json.loads(called.stdout)["structuredContent"] == {"result": "hi"}
        status = raybus("status", "startaddress", *address, cache=tmp_path)
        assert "kit: each worker reserves 0.5 CPU(s)" in status.stdout
    finally:
        stopped = raybus("stop", "startaddress", *address, cache=tmp_path)
    assert stopped.returncode == 0, stopped.stderr[-3000:]


def test_joining_without_the_token_ends_in_one_line_saying_what_to_set(
    head_address: str, tmp_path: Path
) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text(BUS.format(name="notoken"))
    no_auth = {"RAY_AUTH_MODE": "disabled"}  # whatever this machine's default is
    refused = raybus("start", str(config), "--address", head_address, cache=tmp_path, env=no_auth)
    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"raybus: cannot join the Ray cluster at {head_address!r}: ")
    assert "set RAY_AUTH_MODE=token" in last


def test_joining_with_a_wrong_token_ends_in_one_line_saying_which_to_check(
    head_address: str, tmp_path: Path
) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text(BUS.format(name="wrongtoken"))
    wrong = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    refused = raybus("start", str(config), "--address", head_address, cache=tmp_path, env=wrong)
    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"raybus: cannot join the Ray cluster at {head_address!r}: ")
    assert "refused this process's token" in last
    assert "RAY_AUTH_TOKEN" in last
