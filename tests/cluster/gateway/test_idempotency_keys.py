"""A caller's ``_meta["io.raybus/idempotency-key"]`` reaches the bus as the call's
idempotency key (README "Idempotency keys"), on every gateway path, with the body
unchanged; a malformed key is -32602 and never reaches it; the gateway declares the
``io.raybus/idempotency`` extension. Served over HTTP to the official client, a fake
bus, no Ray."""

from __future__ import annotations

import httpx2 as httpx
import mcp
import pytest

from cluster.gateway.call_meta import EXTENSION, META_KEY, idempotency_key_in_meta
from cluster.gateway.server import Gateway
from tests.cluster.gateway.fake_bus import fake_bus
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


async def test_server_discover_declares_how_long_the_bus_remembers_a_key() -> None:
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
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
