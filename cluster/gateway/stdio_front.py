"""MCP on stdin/stdout (``raybus up --stdio``), with the codec's checks on every line.

The SDK's stdio transport parses each line itself: it keeps the last of duplicate keys,
takes ``NaN`` and ``Infinity`` for numbers, and answers a line it cannot parse with
nothing at all, so the client waits for an answer that never comes. As on HTTP and
``/ws``, each line here passes the codec first (UTF-8, size, depth, duplicate keys,
``NaN``/``Infinity``/``1e999``, one JSON-RPC 2.0 message); a line that fails gets its
JSON-RPC error (-32700 or -32600) on stdout, leaves an audit record, and the session goes
on. The SDK still owns the wire: its writer, and its claim on stdout (stray prints go to
stderr).
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import jsonrpc_message_adapter

from cluster.gateway.policy.audit import AuditLog
from cluster.gateway.policy.http_guards import Refusals
from transports.codec import DecodeLimits, error_response_for, message_from_json, parse_json
from transports.envelope import ANONYMOUS
from transports.errors import InvalidMessage, InvalidRequest, MessageTooLarge, ParseError

__all__ = ["checked_stdio_server"]


class _CheckedLines:
    """The lines of ``source`` that pass the codec, as text; the others are answered."""

    def __init__(
        self,
        source: AsyncIterable[bytes],
        limits: DecodeLimits,
        audit: AuditLog | None,
        refusals: Refusals | None,
    ) -> None:
        self._source = source
        self._limits = limits
        self._audit = audit
        self._refusals = refusals
        self._send: Callable[[SessionMessage], Awaitable[None]] | None = None
        self._sending = anyio.Event()

    def answer_with(self, send: Callable[[SessionMessage], Awaitable[None]]) -> None:
        self._send = send
        self._sending.set()

    async def __aiter__(self) -> AsyncIterator[str]:
        async for raw in self._source:
            line = raw.strip()
            if not line:
                continue
            try:
                message_from_json(parse_json(line, self._limits))
            except (InvalidMessage, MessageTooLarge) as exc:
                await self._refuse(
                    exc if isinstance(exc, InvalidMessage) else InvalidRequest(str(exc))
                )
                continue
            yield line.decode("utf-8")  # valid UTF-8: parse_json decoded it strictly

    async def _refuse(self, error: InvalidMessage) -> None:
        if self._refusals is not None:
            self._refusals.refused(
                "parse_error" if isinstance(error, ParseError) else "invalid_request"
            )
        if self._audit is not None:
            self._audit.write(
                {
                    "time": time.time(),
                    "principal": ANONYMOUS,
                    "method": None,
                    "tool": None,
                    "outcome": f"error {error.code}",
                    "latency_ms": 0.0,
                }
            )
        await self._sending.wait()  # the SDK's writer is known once the server is entered
        assert self._send is not None
        answer = jsonrpc_message_adapter.validate_python(error_response_for(error).to_json_dict())
        await self._send(SessionMessage(answer))


@asynccontextmanager
async def checked_stdio_server(
    limits: DecodeLimits,
    audit: AuditLog | None = None,
    refusals: Refusals | None = None,
    *,
    lines: AsyncIterable[bytes] | None = None,
    stdout: anyio.AsyncFile[str] | None = None,
) -> AsyncIterator[tuple[Any, Any]]:
    """The SDK's ``stdio_server`` reading only lines that pass the codec's checks.

    Args:
        limits: the codec's limits (the gateway's ``max_body_bytes`` as the size cap).
        audit: where refused lines leave their record.
        refusals: counts refused lines (``parse_error``, ``invalid_request``).
        lines: what to read instead of this process's stdin (tests).
        stdout: where to write instead of this process's stdout (tests).
    """
    source = lines if lines is not None else anyio.wrap_file(sys.stdin.buffer)
    checked = _CheckedLines(source, limits, audit, refusals)
    # The SDK reads its stdin only by iterating over lines, as ``checked`` offers them.
    stdin = cast(anyio.AsyncFile[str], checked)
    async with stdio_server(stdin=stdin, stdout=stdout) as (read, write):
        checked.answer_with(write.send)
        yield read, write
