"""Servers the HTTP workloads call, each in its own process: ``raybus up`` and the SDK.

Both print ``serving MCP at <url>`` on stderr once they accept connections (the line
``raybus up`` prints for its users); :func:`served` starts one, waits for that line,
keeps the tail of its stderr for error messages and stops it with SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import signal
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import uvicorn

__all__ = ["SERVING", "Served", "ServerFailed", "sdk_server_argv", "served"]

SERVING = "serving MCP at "
# A cold, loaded 2-core machine: `raybus up` joining a Ray and starting its workers
# was seen past a minute while other jobs ran.
_START_TIMEOUT_S = 240.0
_STOP_TIMEOUT_S = 120.0
_TAIL_LINES = 30


class ServerFailed(RuntimeError):
    """A server process exited or did not serve in time; carries its stderr tail."""


@dataclass
class Served:
    """A running server process and the URL it serves MCP on."""

    url: str
    pid: int


@contextlib.asynccontextmanager
async def served(argv: Sequence[str], *, what: str) -> AsyncIterator[Served]:
    """Run ``argv`` until it serves MCP; stop it (SIGTERM, then kill) on exit.

    Raises:
        ServerFailed: the process exited first or did not serve within the bound.
    """
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    url: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def read_stderr() -> None:
        assert process.stderr is not None
        while line := (await process.stderr.readline()).decode(errors="replace"):
            tail.append(line.rstrip())
            if SERVING in line and not url.done():
                url.set_result(line.split(SERVING, 1)[1].split()[0])
        if not url.done():
            url.set_exception(ServerFailed(f"{what} exited before serving:\n" + "\n".join(tail)))

    reader = asyncio.create_task(read_stderr())
    try:
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                address = await url
        except TimeoutError:
            raise ServerFailed(
                f"{what} did not serve within {_START_TIMEOUT_S:.0f} s:\n" + "\n".join(tail)
            ) from None
        yield Served(address, process.pid)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(_STOP_TIMEOUT_S):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


def sdk_server_argv(server: str) -> list[str]:
    """The command serving ``server`` (``module:attribute``) directly with the SDK."""
    return [sys.executable, "-m", "benchmarks.serving", server]


async def _serve_sdk(target: str) -> None:
    """Serve an SDK server object over Streamable HTTP as its own docs say, on a free port.

    The SDK's ``streamable_http_app`` with its defaults under uvicorn (what
    ``MCPServer.run("streamable-http")`` does), bound to 127.0.0.1 on a port the OS picks.
    """
    module, _, attribute = target.partition(":")
    server = getattr(importlib.import_module(module), attribute)
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = server.streamable_http_app()
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    runner = uvicorn.Server(config)
    serving = asyncio.create_task(runner.serve(sockets=[sock]))
    while not runner.started and not serving.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.02)
    print(f"{SERVING}http://127.0.0.1:{port}/mcp", file=sys.stderr, flush=True)
    await serving


def main() -> None:
    parser = argparse.ArgumentParser(description="serve an SDK server object over HTTP")
    parser.add_argument("server", help="module:attribute of an MCPServer / Server object")
    # Stock asyncio, as the SDK's own ``run("streamable-http")`` (anyio.run) serves: on
    # uvloop this server closed 3-5 of B3's 300 long calls' connections ("Connection
    # closed") in two runs, and none on asyncio.
    asyncio.run(_serve_sdk(parser.parse_args().server))


if __name__ == "__main__":
    main()
