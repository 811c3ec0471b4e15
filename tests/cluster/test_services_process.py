"""The process helpers against real child processes (no broker, no Ray)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.services.process import (
    LOOPBACK,
    free_port,
    is_running,
    log_tail,
    pid_start_ticks,
    poll_until,
    port_accepts,
    spawn,
    stop_process,
)

# A child that announces when its SIGTERM disposition is in place, then waits forever.
_CHILD = """
import signal, sys
if sys.argv[1] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
signal.pause()
"""


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:  # never leak a process, whatever the test did
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)


async def _start_child(
    tmp_path: Path, children: list[subprocess.Popen[bytes]], mode: str
) -> subprocess.Popen[bytes]:
    log = tmp_path / f"{mode}.log"
    child = spawn([sys.executable, "-c", _CHILD, mode], log_path=log, cwd=tmp_path)
    children.append(child)

    async def announced() -> bool:
        return "ready" in log_tail(log)

    await poll_until(announced, timeout_s=30)
    return child


async def test_stop_process_ends_a_child_with_sigterm(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    child = await _start_child(tmp_path, children, "default")
    assert is_running(child.pid, pid_start_ticks(child.pid))

    assert await stop_process(child.pid, pid_start_ticks(child.pid), grace_s=10)
    assert child.wait(timeout=5) == -15
    assert not await stop_process(child.pid)


async def test_stop_process_escalates_to_sigkill_when_sigterm_is_ignored(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    child = await _start_child(tmp_path, children, "ignore-term")

    assert await stop_process(child.pid, grace_s=0.5, kill_wait_s=10)
    assert child.wait(timeout=5) == -9


async def test_stop_process_leaves_a_reused_pid_alone(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    child = await _start_child(tmp_path, children, "default")
    ticks = pid_start_ticks(child.pid)
    assert ticks is not None
    stranger_ticks = ticks - 1  # the same pid, but not the process that was recorded

    assert not is_running(child.pid, stranger_ticks)
    assert not await stop_process(child.pid, stranger_ticks, grace_s=0.5)
    assert child.poll() is None


async def test_poll_until_gives_up_after_its_timeout() -> None:
    async def never() -> bool:
        return False

    with pytest.raises(TimeoutError):
        await poll_until(never, timeout_s=0.2)


async def test_poll_until_returns_as_soon_as_the_check_holds() -> None:
    calls = 0

    async def third_time() -> bool:
        nonlocal calls
        calls += 1
        return calls == 3

    async with asyncio.timeout(5):
        await poll_until(third_time, timeout_s=5, first_delay_s=0.01)
    assert calls == 3


async def test_free_port_is_bindable_on_loopback_and_port_accepts_sees_a_listener() -> None:
    port = free_port()
    assert not await port_accepts(LOOPBACK, port, timeout_s=1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((LOOPBACK, port))
        listener.listen()
        assert await port_accepts(LOOPBACK, port, timeout_s=1)


def test_log_tail_keeps_the_last_lines_and_tolerates_missing_files(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    log.write_bytes(b"".join(f"line {i}\n".encode() for i in range(100)) + b"\xff bad utf-8\n")

    assert log_tail(log, lines=2) == "line 99\n\ufffd bad utf-8"
    assert log_tail(tmp_path / "missing.log") == ""
    assert log_tail(None) == ""
