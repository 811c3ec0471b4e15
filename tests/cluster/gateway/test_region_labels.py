"""A caller's ``_meta["io.raybus/labels"]`` reaches the bus as the call's labels (README
"Regions"), on every gateway path; malformed labels are -32602 and never reach it.
Served over HTTP to the official client, a fake bus, no Ray."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2 as httpx
import mcp
import pytest
from mcp.client.streamable_http import streamable_http_client

from cluster.gateway.policy.settings import PolicyConfig
from cluster.gateway.server import Gateway
from tests.cluster.gateway.fake_bus import FakeBus, fake_bus
from tests.cluster.gateway.serving import serving
from tests.cluster.gateway.test_tracing import client, path

__all__ = ["path"]  # the fixture: each test runs on every gateway path


async def test_meta_labels_reach_the_bus(path: str) -> None:
    bus = fake_bus()
    async with client(path, bus, []) as session:
        meta = {"io.raybus/labels": {"region": "eu"}}
        result = await session.call_tool("echo", {"text": "hi"}, meta=meta)  # type: ignore[arg-type]
        assert not result.is_error
        assert not (await session.call_tool("echo", {"text": "plain"})).is_error
    labels = [c.labels for c in bus.calls if c.method == "tools/call"]
    assert labels == [{"region": "eu"}, None]


@pytest.mark.parametrize("asked", [{"region": "EU!"}, {"region": 7}, ["eu"]])
async def test_malformed_meta_labels_are_invalid_params_and_never_reach_the_bus(
    path: str, asked: object
) -> None:
    bus = fake_bus()
    async with client(path, bus, []) as session:
        meta = {"io.raybus/labels": asked}
        with pytest.raises(mcp.MCPError) as refused:
            await session.call_tool("echo", {"text": "hi"}, meta=meta)  # type: ignore[arg-type]
    assert refused.value.error.code == -32602
    assert "label" in refused.value.error.message
    assert [c for c in bus.calls if c.method == "tools/call"] == []


PINNED = {
    "tokens": [
        {
            "principal": "ship-7",
            "sha256": hashlib.sha256(b"ship-token").hexdigest(),
            "labels": {"region": "eu"},
        }
    ]
}


@asynccontextmanager
async def pinned_client(path: str, bus: FakeBus) -> AsyncIterator[mcp.Client]:
    """A client holding ship-7's token, whose calls are pinned to region eu."""
    mode = "legacy" if path == "handshake era" else "2026-07-28"
    gateway = Gateway(bus, policy=PolicyConfig.model_validate(PINNED))
    headers = {"authorization": "Bearer ship-token"}
    async with (
        serving(gateway, PINNED) as url,
        httpx.AsyncClient(headers=headers, timeout=30) as http,
        mcp.Client(streamable_http_client(url, http_client=http), mode=mode) as session,
    ):
        yield session


async def test_a_tokens_pinned_labels_ride_every_call_and_cannot_be_contradicted(
    path: str,
) -> None:
    bus = fake_bus()
    async with pinned_client(path, bus) as session:
        assert not (await session.call_tool("echo", {"text": "plain"})).is_error
        agreeing = {"io.raybus/labels": {"region": "eu", "tier": "gold"}}
        result = await session.call_tool("echo", {"text": "hi"}, meta=agreeing)  # type: ignore[arg-type]
        assert not result.is_error
        contradicting = {"io.raybus/labels": {"region": "us"}}
        with pytest.raises(mcp.MCPError) as refused:
            await session.call_tool("echo", {"text": "hi"}, meta=contradicting)  # type: ignore[arg-type]
    assert refused.value.error.code == 1010
    assert refused.value.error.data == {"region": "us", "tool": "echo", "reason": "conflict"}
    labels = [c.labels for c in bus.calls if c.method == "tools/call"]
    assert labels == [{"region": "eu"}, {"region": "eu", "tier": "gold"}]
