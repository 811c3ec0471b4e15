"""Standard MCP clients through the gateway, served in-process on the session's Ray."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import mcp
import mcp_types as types
import pytest
import pytest_asyncio

from tests.cluster.bus_helpers import bus_config, running_gateway
from tests.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway_url(ray_session: None) -> AsyncIterator[str]:
    config = bus_config(
        [{"name": "kit", "server": "cluster.examples.testkit:server", "min_workers": 1}]
    )
    async with running_gateway(config) as url:
        yield url


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_official_client_lists_and_calls_tools(gateway_url: str, mode: str) -> None:
    async with mcp.Client(gateway_url, mode=mode) as client:
        tools = await client.list_tools()
        assert {"echo", "nap", "ask"} <= {t.name for t in tools.tools}
        result = await client.call_tool("echo", {"text": f"via {mode}"})
        assert result.structured_content == {"result": f"via {mode}"}
        resource = await client.read_resource("testkit://greeting")
        assert resource.contents[0].text == "hello from testkit"  # type: ignore[union-attr]
        prompt = await client.get_prompt("summarize", {"topic": "buses"})
        assert "buses" in prompt.messages[0].content.text  # type: ignore[union-attr]


async def test_progress_and_sampling_are_relayed_to_a_legacy_client(gateway_url: str) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async def sampling(
        context: Any, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="forty-two"), model="test"
        )

    async with mcp.Client(gateway_url, mode="legacy", sampling_callback=sampling) as client:
        counted = await client.call_tool(
            "count_with_progress", {"steps": 3}, progress_callback=on_progress
        )
        assert counted.structured_content == {"result": 3}
        asked = await client.call_tool("ask", {"question": "meaning?"})
        assert asked.structured_content == {"result": "forty-two"}
    assert seen == [1, 2, 3]


async def test_an_unknown_tool_is_a_json_rpc_error(gateway_url: str) -> None:
    async with mcp.Client(gateway_url, mode="legacy") as client:
        with pytest.raises(mcp.MCPError) as caught:
            await client.call_tool("no_such_tool", {})
    assert caught.value.code == -32602


async def test_a_foreign_origin_is_refused(gateway_url: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with httpx.AsyncClient() as http:
        response = await http.post(
            gateway_url,
            json=body,
            headers={
                "Origin": "http://evil.example",
                "Accept": "application/json, text/event-stream",
            },
        )
    assert response.status_code == 403


async def test_a_foreign_host_header_is_refused(gateway_url: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with httpx.AsyncClient() as http:
        response = await http.post(
            gateway_url,
            json=body,
            headers={"Host": "evil.example", "Accept": "application/json, text/event-stream"},
        )
    assert response.status_code == 403


async def _post(url: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    base = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with httpx.AsyncClient() as http:
        return await http.post(url, content=content, headers={**base, **(headers or {})})


async def test_a_body_over_the_cap_gets_413(gateway_url: str) -> None:
    huge = (
        b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"'
        + b"x" * (5 * 1024 * 1024)
        + b'"}}'
    )
    assert (await _post(gateway_url, huge)).status_code == 413


async def test_a_json_rpc_batch_is_rejected(gateway_url: str) -> None:
    batch = b'[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]'
    response = await _post(gateway_url, batch)
    assert response.status_code == 400
    assert response.json()["error"]["code"] in (-32600, -32602)


async def test_an_unsupported_protocol_version_header_is_rejected(gateway_url: str) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'
    response = await _post(gateway_url, body, {"MCP-Protocol-Version": "1999-01-01"})
    assert response.status_code == 400


async def test_websocket_clients_speak_mcp_on_ws(gateway_url: str) -> None:
    import json

    import websockets

    ws_url = gateway_url.replace("http://", "ws://").replace("/mcp", "/ws")
    async with asyncio.timeout(30), websockets.connect(ws_url, subprotocols=["mcp"]) as ws:  # type: ignore[list-item]

        async def call(request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
            await ws.send(
                json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            )
            while True:
                message = json.loads(await ws.recv())
                if message.get("id") == request_id:
                    return message  # type: ignore[no-any-return]

        init = await call(
            1,
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "ws", "version": "1"},
            },
        )
        assert init["result"]["serverInfo"]["name"].startswith("raybus-")
        await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        echoed = await call(2, "tools/call", {"name": "echo", "arguments": {"text": "over ws"}})
        assert echoed["result"]["structuredContent"] == {"result": "over ws"}
        await ws.send("{not json")
        bad = json.loads(await ws.recv())
        assert bad["error"]["code"] == -32700
        assert (await call(3, "ping", {}))["result"] == {}


async def test_resource_subscribers_are_told_when_it_changes(gateway_url: str) -> None:
    updates: list[str] = []

    async def on_message(message: Any) -> None:
        root = getattr(message, "root", message)
        if isinstance(root, types.ResourceUpdatedNotification):
            updates.append(str(root.params.uri))

    async with mcp.Client(gateway_url, mode="legacy", message_handler=on_message) as subscriber:
        await subscriber.subscribe_resource("testkit://greeting")
        async with mcp.Client(gateway_url, mode="legacy") as other:
            await other.call_tool("touch", {"uri": "testkit://greeting"})
            await other.call_tool("touch", {"uri": "testkit://unwatched"})
        await wait_until(lambda: bool(updates))
        await subscriber.unsubscribe_resource("testkit://greeting")
    assert updates == ["testkit://greeting"]
