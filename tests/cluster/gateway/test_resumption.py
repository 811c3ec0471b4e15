"""SSE resumption (SEP-1699) over real HTTP: a client resumes its own stream, and an
event id from another session replays nothing of that session."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx2 as httpx

from cluster.gateway.server import Gateway
from tests.cluster.gateway.fake_bus import fake_bus
from tests.cluster.gateway.serving import serving

_VERSION = "2025-11-25"
_BASE = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": _VERSION,
}


def _events(text: str) -> list[tuple[str, Any]]:
    """(id, decoded data) of each SSE event that carries data."""
    events: list[tuple[str, Any]] = []
    event_id, data = "", ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif not line:
            if event_id or data:
                events.append((event_id, json.loads(data) if data else None))
            event_id, data = "", ""
    return events


async def _session(http: httpx.AsyncClient, url: str) -> str:
    opened = await http.post(
        url,
        headers=_BASE,
        json={
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": _VERSION,
                "capabilities": {},
                "clientInfo": {"name": "resumer", "version": "1"},
            },
        },
    )
    session = opened.headers["mcp-session-id"]
    await http.post(
        url,
        headers={**_BASE, "Mcp-Session-Id": session},
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
    )
    return session


async def _call(
    http: httpx.AsyncClient, url: str, session: str, text: str
) -> list[tuple[str, Any]]:
    answered = await http.post(
        url,
        headers={**_BASE, "Mcp-Session-Id": session},
        json={
            "jsonrpc": "2.0",
            "id": 1,  # the same request id in both sessions: the SDK's stream id
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": text}},
        },
    )
    assert answered.headers["content-type"].startswith("text/event-stream")
    return _events(answered.text)


async def _resume(
    http: httpx.AsyncClient, url: str, session: str, last_event_id: str, *, watch: list[str]
) -> str:
    """What a GET with ``Last-Event-ID`` replays: read until any of ``watch`` shows or the
    server ends the stream (it does at once when it replays nothing; a stream that was
    replayed stays open as the call's live stream)."""
    headers = {**_BASE, "Mcp-Session-Id": session, "Last-Event-ID": last_event_id}
    headers["Accept"] = "text/event-stream"
    seen = ""
    async with asyncio.timeout(30), http.stream("GET", url, headers=headers) as replay:
        async for chunk in replay.aiter_text():
            seen += chunk
            if any(text in seen for text in watch):
                break
    return seen


async def test_a_client_resumes_its_own_stream_and_never_sees_another_sessions_answer() -> None:
    async with serving(Gateway(fake_bus())) as url, httpx.AsyncClient(timeout=30) as http:
        alice, bob = await _session(http, url), await _session(http, url)
        alice_events = await _call(http, url, alice, "alice's secret")
        bob_events = await _call(http, url, bob, "bob's secret")
        alice_first, bob_first = alice_events[0][0], bob_events[0][0]
        assert alice_first  # primed: the streams can be resumed
        assert bob_first

        secrets = ["alice's secret", "bob's secret"]
        own = await _resume(http, url, alice, alice_first, watch=secrets)
        assert "alice's secret" in own
        assert "bob's secret" not in own
        # Bob presents Alice's event id: the same stream name ("1"), another session.
        stolen = await _resume(http, url, bob, alice_first, watch=secrets)
        assert "alice's secret" not in stolen
        assert "bob's secret" not in stolen
