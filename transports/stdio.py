"""MCP's stdio transport: newline-delimited JSON over pipes.

Two roles:

* :func:`open_stdio_server` - this process is the MCP server, speaking on its own
  stdin/stdout (what a desktop client launches).
* :class:`StdioClientTransport` - this process launches an MCP server command and speaks
  to its stdin/stdout. A child that exits surfaces as ``ConnectionClosed`` (with its exit
  code and the tail of its stderr), never as a hang. ``close`` follows the MCP shutdown
  sequence: close the child's stdin, wait, SIGTERM, wait, SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections import deque
from collections.abc import Mapping, Sequence

from transports.base import Delivery, TransportType
from transports.codec import DEFAULT_LIMITS, DecodeLimits
from transports.errors import ConnectionClosed
from transports.framing import NewlineFrames
from transports.stream import StreamTransport

__all__ = ["StdioClientTransport", "open_pipe_transport", "open_stdio_server"]

logger = logging.getLogger(__name__)

_STDERR_TAIL_LINES = 20


async def open_pipe_transport(
    read_fd: int,
    write_fd: int,
    *,
    limits: DecodeLimits = DEFAULT_LIMITS,
    close_fds: bool = True,
) -> StreamTransport:
    """A newline-framed transport over two pipe file descriptors.

    Args:
        close_fds: close the descriptors with the transport (False for stdin/stdout,
            which the process keeps).
    """
    loop = asyncio.get_running_loop()
    frames = NewlineFrames(limits.max_message_bytes)
    reader = asyncio.StreamReader(limit=frames.stream_limit(), loop=loop)
    read_pipe = os.fdopen(read_fd, "rb", buffering=0, closefd=close_fds)
    write_pipe = os.fdopen(write_fd, "wb", buffering=0, closefd=close_fds)
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), read_pipe
    )
    write_transport, write_protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), loop=loop),
        write_pipe,
    )
    writer = asyncio.StreamWriter(write_transport, write_protocol, None, loop)

    async def close_read_side() -> None:
        read_transport.close()

    return StreamTransport(
        reader,
        writer,
        frames=frames,
        transport_type=TransportType.STDIO,
        limits=limits,
        on_close=close_read_side,
    )


async def open_stdio_server(*, limits: DecodeLimits = DEFAULT_LIMITS) -> StreamTransport:
    """This process's own stdin/stdout as an MCP stdio transport.

    Anything else printed to stdout would corrupt the stream: log to stderr.
    """
    sys.stdout.flush()
    return await open_pipe_transport(
        sys.stdin.fileno(), sys.stdout.fileno(), limits=limits, close_fds=False
    )


class StdioClientTransport(StreamTransport):
    """Speaks MCP to a child process started from ``command``; see :meth:`launch`."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        *,
        command: Sequence[str],
        limits: DecodeLimits,
        shutdown_timeout_s: float,
    ) -> None:
        assert process.stdout is not None
        assert process.stdin is not None
        self.process = process
        self.command = tuple(command)
        self._shutdown_timeout_s = shutdown_timeout_s
        self._stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)
        self._stderr_task = asyncio.create_task(self._collect_stderr())
        super().__init__(
            process.stdout,
            process.stdin,
            frames=NewlineFrames(limits.max_message_bytes),
            transport_type=TransportType.STDIO,
            limits=limits,
            on_close=self._reap,
        )

    @classmethod
    async def launch(
        cls,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        limits: DecodeLimits = DEFAULT_LIMITS,
        shutdown_timeout_s: float = 2.0,
    ) -> StdioClientTransport:
        """Start ``command`` and connect to its stdin/stdout.

        Raises:
            ConnectionClosed: the command could not be started (not found, not runnable).
        """
        if not command:
            raise ValueError("command must name a program")
        frames = NewlineFrames(limits.max_message_bytes)
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                limit=frames.stream_limit(),
                start_new_session=True,  # a Ctrl-C meant for us is not the child's
            )
        except OSError as exc:
            raise ConnectionClosed(f"cannot start {command[0]!r}: {exc}") from None
        logger.info("started stdio server %s (pid %d)", command[0], process.pid)
        return cls(process, command=command, limits=limits, shutdown_timeout_s=shutdown_timeout_s)

    @property
    def stderr_tail(self) -> list[str]:
        """The last lines the child wrote to stderr (for diagnostics)."""
        return list(self._stderr_tail)

    async def receive(self) -> Delivery:
        try:
            return await super().receive()
        except ConnectionClosed as exc:
            raise ConnectionClosed(await self._exit_reason(str(exc))) from None

    async def send_frame(self, payload: bytes) -> None:
        # A server that exits at once is often first noticed by a write (the handshake),
        # not a read: that error must carry the exit code and stderr too.
        try:
            await super().send_frame(payload)
        except ConnectionClosed as exc:
            raise ConnectionClosed(await self._exit_reason(str(exc))) from None

    async def _exit_reason(self, reason: str) -> str:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._shutdown_timeout_s):
                await self.process.wait()
                await self._stderr_task
        code = self.process.returncode
        parts = [reason]
        if code is not None:
            parts.append(f"server {self.command[0]!r} exited with code {code}")
        if self._stderr_tail:
            parts.append("stderr: " + " | ".join(self._stderr_tail))
        return "; ".join(parts)

    async def _collect_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        while True:
            try:
                line = await stream.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue  # an over-long stderr line: drop it, keep draining
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            self._stderr_tail.append(text)
            logger.debug("[%s stderr] %s", self.command[0], text)

    async def _reap(self) -> None:
        process = self.process
        # MCP stdio shutdown: close stdin, wait; then SIGTERM, wait; then SIGKILL.
        for signal_child in (None, process.terminate, process.kill):
            if process.returncode is not None:
                break
            if signal_child is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal_child()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._shutdown_timeout_s):
                    await process.wait()
        self._stderr_task.cancel()
        await asyncio.gather(self._stderr_task, return_exceptions=True)
        logger.info("stdio server %s exited with code %s", self.command[0], process.returncode)
