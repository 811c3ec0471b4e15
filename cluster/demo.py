"""``raybus demo``: the smallest real end-to-end run.

Launches an unmodified official-SDK MCP server as a stdio child through raybus's own
stdio transport, performs the MCP handshake, lists its tools and calls one, printing each
JSON-RPC exchange. It needs nothing but this package.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from transports.errors import BusError
from transports.message import Notification, Request, Response
from transports.stdio import StdioClientTransport

__all__ = ["add_parser", "run_demo"]

PROTOCOL_VERSION = "2025-11-25"
DEMO_SERVER = (sys.executable, "-m", "cluster.examples.calculator")


async def _call(
    transport: StdioClientTransport, request_id: int, method: str, params: dict[str, Any]
) -> Response:
    await transport.send(Request(id=request_id, method=method, params=params))
    while True:  # a server may interleave notifications (logging, progress)
        delivery = await transport.receive()
        if isinstance(delivery.message, Response) and delivery.message.id == request_id:
            return delivery.message


async def run_demo(timeout_s: float = 30.0) -> list[Response]:
    """Handshake, tools/list and tools/call against the demo server; returns the answers.

    Raises:
        BusError: the server could not be started or answered with a transport failure.
        TimeoutError: the exchange did not finish within ``timeout_s``.
    """
    async with asyncio.timeout(timeout_s):
        transport = await StdioClientTransport.launch(DEMO_SERVER)
        async with transport:
            initialize = await _call(
                transport,
                1,
                "initialize",
                {
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "raybus-demo", "version": "0.1.0"},
                },
            )
            await transport.send(Notification(method="notifications/initialized"))
            tools = await _call(transport, 2, "tools/list", {})
            call = await _call(
                transport, 3, "tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}}
            )
    return [initialize, tools, call]


def _run(args: argparse.Namespace) -> int:
    try:
        answers = asyncio.run(run_demo())
    except (BusError, TimeoutError) as exc:
        print(f"raybus demo failed: {exc}", file=sys.stderr)
        return 1
    for title, answer in zip(
        ("initialize", "tools/list", "tools/call add(2, 3)"), answers, strict=True
    ):
        print(f"--> {title}")
        print(json.dumps(answer.to_json_dict(), indent=2))
    call = answers[-1]
    if call.is_error or call.result.get("isError"):
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="call a tool on an official-SDK MCP server over raybus's stdio transport"
    )
    parser.set_defaults(run=_run)
