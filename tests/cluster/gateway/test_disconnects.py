"""Clients that reset their connections mid-request cost the gateway nothing lasting."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import struct

import mcp
import pytest
from mcp.server.streamable_http import StreamableHTTPServerTransport

from cluster.client import BusClient
from tests.cluster.bus_helpers import bus_config, running_gateway
from tests.waiting import wait_until

pytestmark = pytest.mark.ray

KIT = {"name": "kit", "server": "cluster.examples.testkit:server"}
INITIALIZE = (
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":'
    b'"2025-11-25","capabilities":{},"clientInfo":{"name":"rude","version":"1"}}}'
)
RESETS = 400


def reset_mid_request(port: int, *, whole_body: bool) -> None:
    """Send an initialize (whole, or half its body), then reset the connection (RST)."""
    body = INITIALIZE if whole_body else INITIALIZE[: len(INITIALIZE) // 2]
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\nContent-Length: {len(INITIALIZE)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(head + body)


def live(kind: type) -> int:
    """How many objects of ``kind`` this process holds (what a dead connection may leak)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, kind))


def leftovers() -> int:
    return live(StreamableHTTPServerTransport) + live(BusClient)


async def test_abrupt_disconnects_leave_no_traceback_and_no_state_behind(
    ray_session: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # A whole initialize may be answered before its reset arrives: that session is the
    # server's to expire, so expire idle sessions quickly here.
    config = bus_config([KIT], gateway={"session_idle_timeout_s": 3})
    async with running_gateway(config) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        async with mcp.Client(url) as client:
            await client.call_tool("echo", {"text": "warm up"})
        baseline = leftovers()
        for n in range(RESETS):
            await asyncio.to_thread(reset_mid_request, port, whole_body=n % 2 == 0)
        # Dead connections are noticed asynchronously: wait (bounded) for the state to go.
        # At most the baseline: objects of earlier tests may be collected meanwhile.
        await wait_until(lambda: leftovers() <= baseline, timeout_s=60)
        async with mcp.Client(url) as client:
            echoed = await client.call_tool("echo", {"text": "still serving"})
    assert echoed.structured_content == {"result": "still serving"}
    assert not [r for r in caplog.records if r.exc_info or "ClientDisconnect" in r.getMessage()]
    assert "Traceback" not in caplog.text
