"""A caller's ``_meta["io.raybus/labels"]`` reaches the bus as the call's labels (README
"Regions"), on every gateway path; malformed labels are -32602 and never reach it.
Served over HTTP to the official client, a fake bus, no Ray."""

from __future__ import annotations

import mcp
import pytest

from tests.cluster.gateway.fake_bus import fake_bus
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
