"""Start, stop, freeze and restart a Streamable HTTP MCP server process on 127.0.0.1.

Remote-pool tests host a server that runs in a process of its own, as a remote server
does: the official SDK (:mod:`tests.cluster.remote_upstream`) or the reference
TypeScript server. Each is a command that listens on a port and says so on a line of
its output; this waits for that line (bounded), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

__all__ = ["Upstream", "free_port", "running_upstream", "sdk_upstream_command"]

_ROOT = Path(__file__).resolve().parents[1]
_START_TIMEOUT_S = 120.0  # a cold interpreter or npm package on a loaded 2-core machine


def sdk_upstream_command(port: int) -> list[str]:
    return [sys.executable, "-m", "tests.cluster.remote_upstream", str(port)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Upstream:
    """One server process; ``url`` is its MCP endpoint."""

    def __init__(
        self, command: Callable[[int], Sequence[str]], ready: re.Pattern[str], port: int
    ) -> None:
        self._command = command
        self._ready = ready
        self.port = port
        self.url = f"http://127.0.0.1:{port}/mcp"
        self.process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    async def start(self, env: dict[str, str] | None = None) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self._command(self.port),
            cwd=_ROOT,
            env={**os.environ, **(env or {})},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own group: npm's node child goes with it
        )
        assert self.process.stdout is not None
        said: list[str] = []
        async with asyncio.timeout(_START_TIMEOUT_S):
            while True:
                line = (await self.process.stdout.readline()).decode(errors="replace")
                if not line:
                    raise RuntimeError(f"upstream exited before listening: {''.join(said)}")
                said.append(line)
                if self._ready.search(line):
                    break
        self._drain = asyncio.create_task(self._discard_output())

    async def _discard_output(self) -> None:
        # A full pipe would block the server's logging, and with it the server.
        assert self.process is not None
        assert self.process.stdout is not None
        while await self.process.stdout.read(65536):
            pass

    def _signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    async def kill(self) -> None:
        """End the server at once (SIGKILL), as a crash would, and wait for it."""
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        if self.process is not None:
            async with asyncio.timeout(30):
                await self.process.wait()
        if self._drain is not None:
            await asyncio.gather(self._drain, return_exceptions=True)

    def freeze(self) -> None:
        """Stop the server's processes (SIGSTOP): connections open, nothing answers."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)


@contextlib.asynccontextmanager
async def running_upstream(
    command: Callable[[int], Sequence[str]] = sdk_upstream_command,
    *,
    ready: str = r"listening on \d+",
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Upstream]:
    upstream = Upstream(command, re.compile(ready), port or free_port())
    await upstream.start(env)
    try:
        yield upstream
    finally:
        await upstream.kill()
