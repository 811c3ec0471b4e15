"""A caller's ``_meta["io.raybus/idempotency-key"]`` reaches the bus as the call's
idempotency key (README "Idempotency keys"), on every gateway path, with the body
unchanged; a malformed key is -32602 and never reaches it; the gateway declares the
``io.raybus/idempotency`` extension. Served over HTTP to the official client, a fake
bus, no Ray."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2 as httpx
import mcp
import pytest

from actors.discovery.catalog import Catalog
from cluster.gateway.bus import MessageHandler
from cluster.gateway.call_meta import EXTENSION, META_KEY, idempotency_key_in_meta
from cluster.gateway.server import Gateway
from tests.cluster.gateway.fake_bus import FakeBus, fake_bus, text_result
from tests.cluster.gateway.serving import serving
from tests.cluster.gateway.test_tracing import client, path

__all__ = ["path"]  # the fixture: each test runs on every gateway path


async def test_a_meta_key_reaches_the_bus_with_the_body_unchanged(path: str) -> None:
    bus = fake_bus()
    async with client(path, bus, []) as session:
        meta = {META_KEY: "ship-7:order-1"}
        result = await session.call_tool("echo", {"text": "hi"}, meta=meta)  # type: ignore[arg-type]
        assert not result.is_error
        assert not (await session.call_tool("echo", {"text": "plain"})).is_error
    calls = [c for c in bus.calls if c.method == "tools/call"]
    assert [c.idempotency_key for c in calls] == ["ship-7:order-1", None]
    assert calls[0].params["_meta"][META_KEY] == "ship-7:order-1"
    assert calls[0].params["arguments"] == {"text": "hi"}


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "must be 1 to 200 characters"),
        ("x" * 201, "must be 1 to 200 characters"),
        (7, "must be a string"),
        ("tab\there", "must be printable ASCII"),
        ("caf\u00e9", "must be printable ASCII"),
    ],
)
async def test_a_malformed_key_is_invalid_params_and_never_reaches_the_bus(
    path: str, key: object, reason: str
) -> None:
    bus = fake_bus()
    async with client(path, bus, []) as session:
        with pytest.raises(mcp.MCPError) as refused:
            await session.call_tool("echo", {"text": "hi"}, meta={META_KEY: key})  # type: ignore[arg-type]
    assert refused.value.error.code == -32602
    assert refused.value.error.message == f"invalid {META_KEY}: {reason}"
    assert [c for c in bus.calls if c.method == "tools/call"] == []


def test_the_longest_key_is_checked_in_one_pass_and_accepted() -> None:
    key = "~" * 200
    assert idempotency_key_in_meta({"_meta": {META_KEY: key}}) == key
    assert idempotency_key_in_meta({"_meta": {"other": 1}}) is None
    assert idempotency_key_in_meta({}) is None


MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


async def test_server_discover_declares_how_long_the_bus_remembers_a_key() -> None:
    meta = MODERN_META
    headers = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "server/discover",
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}}
    gateway = Gateway(fake_bus(), idempotency_ttl_s=3600)
    async with serving(gateway) as url, httpx.AsyncClient(timeout=30) as http:
        answer = (await http.post(url, headers=headers, json=body)).json()
    assert answer["result"]["capabilities"]["extensions"][EXTENSION] == {"ttlS": 3600}


class Hang:
    """A tool that runs until released; says whether it finished or was cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.finished = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(
        self, params: dict[str, Any], on_message: MessageHandler | None
    ) -> dict[str, Any]:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        self.finished.set()
        return text_result("done")


def hanging_bus(hang: Hang) -> FakeBus:
    bus = fake_bus()
    bus.tools["hang"] = hang
    tool = {"name": "hang", "inputSchema": {"type": "object"}}
    bus.catalog = Catalog.of(tools=[*bus.catalog.tools, tool], prompts=[*bus.catalog.prompts])
    return bus


async def test_a_keyed_call_runs_on_when_its_http_client_leaves() -> None:
    hang = Hang()
    headers = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        "mcp-name": "hang",
    }
    meta = {**MODERN_META, META_KEY: "order-1"}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    call["params"] = {"name": "hang", "arguments": {}, "_meta": meta}
    async with serving(Gateway(hanging_bus(hang))) as url:
        async with httpx.AsyncClient(timeout=30) as http:
            posting = asyncio.ensure_future(http.post(url, json=call, headers=headers))
            async with asyncio.timeout(30):
                await hang.started.wait()
            posting.cancel()  # closes the connection mid-call
            await asyncio.gather(posting, return_exceptions=True)
        hang.release.set()
        async with asyncio.timeout(30):
            await hang.finished.wait()
    assert not hang.cancelled.is_set()


async def test_an_explicit_cancellation_still_stops_a_keyed_call() -> None:
    hang = Hang()
    async with client("handshake era", hanging_bus(hang), []) as session:
        calling = asyncio.ensure_future(session.call_tool("hang", {}, meta={META_KEY: "k"}))  # type: ignore[arg-type]
        async with asyncio.timeout(30):
            await hang.started.wait()
        calling.cancel()  # the SDK client sends notifications/cancelled
        await asyncio.gather(calling, return_exceptions=True)
        async with asyncio.timeout(30):
            await hang.cancelled.wait()
    assert not hang.finished.is_set()
