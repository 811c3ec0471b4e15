"""Process, port and polling helpers shared by the local services.

Everything here is Linux-first (``/proc`` gives a process's state and start time) with a
portable fallback, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from cluster.services.errors import ServiceError

__all__ = [
    "LOOPBACK",
    "free_port",
    "is_running",
    "log_tail",
    "pid_start_ticks",
    "poll_until",
    "port_accepts",
    "spawn",
    "stop_process",
]

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_PROC = Path("/proc")


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now.

    The port is released before it is returned, so another process may still take it
    first; callers that bind it later retry on "address already in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None if it is gone."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or ")".
    return raw[raw.rfind(")") + 2 :].split()


def pid_start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat`` field 22).

    Together with the pid it names one process even after the pid is reused, so a stale
    state file never makes us signal a stranger. None where ``/proc`` is unavailable.
    """
    fields = _proc_stat(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])  # field 22 overall; the list starts at field 3


def is_running(pid: int, start_ticks: int | None = None) -> bool:
    """Whether ``pid`` is a live (not zombie) process, and the same one if ticks are given."""
    if _PROC.is_dir():
        fields = _proc_stat(pid)
        if fields is None or fields[0] in ("Z", "X"):
            return False
        return start_ticks is None or int(fields[19]) == start_ticks
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def spawn(
    argv: Sequence[str], *, log_path: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session with stdout and stderr appended to ``log_path``.

    A new session keeps the service out of the terminal's process group: Ctrl-C in the
    shell (or in pytest) does not kill it before its owner can stop it cleanly, and it
    outlives the command that started it.
    """
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def poll_until(
    check: Callable[[], Awaitable[bool]],
    *,
    timeout_s: float,
    first_delay_s: float = 0.05,
    max_delay_s: float = 1.0,
) -> None:
    """Await ``check()`` until it returns True, backing off exponentially between tries.

    ``check`` may raise to abort early (e.g. the process died); that exception propagates.

    Raises:
        TimeoutError: ``check`` did not return True within ``timeout_s``.
    """
    delay = first_delay_s
    async with asyncio.timeout(timeout_s):
        while not await check():
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)


async def port_accepts(host: str, port: int, *, timeout_s: float = 1.0) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds within ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        # spawn() made the service a session (and group) leader: signal the whole group so
        # helpers it started go too; otherwise signal the process alone.
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)


async def stop_process(
    pid: int, start_ticks: int | None = None, *, grace_s: float = 30.0, kill_wait_s: float = 5.0
) -> bool:
    """Stop ``pid`` with SIGTERM, then SIGKILL if it is still running after ``grace_s``.

    Args:
        pid: the process to stop.
        start_ticks: its :func:`pid_start_ticks` when it was started; a process with the
            same pid but a different start time is left alone.
        grace_s: how long a clean shutdown may take.
        kill_wait_s: how long to wait for the process to vanish after SIGKILL.

    Returns:
        True if the process was running and is now stopped, False if it was already gone.

    Raises:
        ServiceError: the process survived SIGKILL (e.g. stuck in the kernel).
    """
    if not is_running(pid, start_ticks):
        return False

    async def gone() -> bool:
        return not is_running(pid, start_ticks)

    _signal(pid, signal.SIGTERM)
    try:
        await poll_until(gone, timeout_s=grace_s, max_delay_s=0.25)
    except TimeoutError:
        logger.warning("pid %d ignored SIGTERM for %.0f s; sending SIGKILL", pid, grace_s)
        _signal(pid, signal.SIGKILL)
        try:
            await poll_until(gone, timeout_s=kill_wait_s, max_delay_s=0.25)
        except TimeoutError as exc:
            raise ServiceError("process", f"pid {pid} is still running after SIGKILL") from exc
    return True


def log_tail(path: Path | None, lines: int = 60, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a log file (at most ``max_bytes``), or ``""`` if absent."""
    if path is None:
        return ""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - max_bytes))
            data = log.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])
