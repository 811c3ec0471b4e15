"""MCP tasks on 2026-07-28: the ``io.modelcontextprotocol/tasks`` extension (SEP-2663).

In process with the official SDK client (a client declares the extension with
``mcp.client.advertise``), and over real HTTP with raw requests where headers matter
(``Mcp-Name``) and where the gateway's direct path for tool calls serves them. The bus
is the fake one; the store is the real store core in memory.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import mcp
import mcp_types as types
import pytest
from mcp.client import advertise
from pydantic import RootModel

from actors.tasks.model import RELATED_TASK_META
from cluster.gateway.server import Gateway
from cluster.gateway.tasks import GatewayTasks
from cluster.gateway.tasks_modern import TASKS_EXTENSION
from cluster.tasks.settings import PoolTasksConfig
from tests.cluster.gateway.fake_bus import FakeBus, fake_bus, text_result
from tests.cluster.gateway.fake_tasks import FakeTaskStore
from tests.cluster.gateway.serving import serving
from transports.message import Request, Response


class Wire(RootModel[dict[str, Any]]):
    """A result exactly as it came over the wire (the client checks nothing of it)."""


REQUIRED: dict[str, Any] = {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}}
TASK_FIELDS = {"taskId", "status", "result", "error", "inputRequests"}
VERSION = "2026-07-28"


def gateway(bus: FakeBus, store: FakeTaskStore) -> Gateway:
    pool = PoolTasksConfig.model_validate({"tools": {"echo": "optional", "count": "required"}})
    tasks = GatewayTasks(store, {"fake": pool}, authenticated=True, configured=True)
    return Gateway(bus, tasks=tasks)


def declaring(served: Gateway) -> mcp.Client:
    return mcp.Client(served.server, extensions=[advertise(TASKS_EXTENSION, {})])


async def send(client: mcp.Client, method: str, **params: Any) -> dict[str, Any]:
    request = types.Request[dict[str, Any], str](method=method, params=params)
    return (await client.session.send_request(request, Wire)).root


async def call(client: mcp.Client, name: str, **params: Any) -> dict[str, Any]:
    request = types.CallToolRequest(params=types.CallToolRequestParams(name=name, **params))
    return (await client.session.send_request(request, Wire)).root


async def test_a_declaring_client_gets_a_flat_task_and_its_outcome_inlined() -> None:
    store = FakeTaskStore()
    async with declaring(gateway(fake_bus(), store)) as client:
        idempotency = {"io.raybus/idempotency": {"ttlS": 86400}}
        assert client.server_capabilities.extensions == {TASKS_EXTENSION: {}, **idempotency}
        assert client.server_capabilities.tasks is None  # never the legacy capability
        created = await call(client, "echo", arguments={"text": "x"})
        assert created["resultType"] == "task"
        assert created["status"] == "working"
        assert isinstance(created["ttlMs"], int)
        assert isinstance(created["pollIntervalMs"], int)
        assert not {"task", "ttl", "pollInterval", "result", "error"} & created.keys()
        task_id = created["taskId"]
        working = await send(client, "tasks/get", taskId=task_id)
        assert (working["resultType"], working["status"]) == ("complete", "working")
        await store.answer(task_id, result=text_result("x"))
        done = await send(client, "tasks/get", taskId=task_id)
    assert done["status"] == "completed"
    assert done["result"]["content"] == [{"type": "text", "text": "x"}]
    assert RELATED_TASK_META not in (done["result"].get("_meta") or {})


async def test_a_tool_error_is_completed_and_a_json_rpc_error_failed() -> None:
    store = FakeTaskStore()
    async with declaring(gateway(fake_bus(), store)) as client:
        tool_error = (await call(client, "echo", arguments={"text": "x"}))["taskId"]
        rpc_error = (await call(client, "echo", arguments={"text": "y"}))["taskId"]
        await store.answer(tool_error, result={**text_result("no"), "isError": True})
        await store.answer(rpc_error, error={"code": -32603, "message": "broke"})
        completed = await send(client, "tasks/get", taskId=tool_error)
        failed = await send(client, "tasks/get", taskId=rpc_error)
    assert completed["status"] == "completed"
    assert completed["result"]["isError"] is True
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": -32603, "message": "broke"}
    assert "result" not in failed


async def test_a_tools_input_request_shows_on_tasks_get_and_tasks_update_answers_it() -> None:
    store = FakeTaskStore()
    asked = {"message": "Delete a.txt?", "requestedSchema": {"type": "object"}}
    accept = {"action": "accept", "content": {"confirm": True}}
    async with declaring(gateway(fake_bus(), store)) as client:
        task_id = (await call(client, "echo", arguments={"text": "x"}))["taskId"]
        await store.ask(task_id, "w#1", "elicitation/create", asked)
        waiting = await send(client, "tasks/get", taskId=task_id)
        with pytest.raises(mcp.MCPError) as not_an_object:
            await send(client, "tasks/update", taskId=task_id, inputResponses={"input-1": 1})
        ack = await send(
            client, "tasks/update", taskId=task_id, inputResponses={"input-1": accept, "x": {}}
        )
        working = await send(client, "tasks/get", taskId=task_id)
        with pytest.raises(mcp.MCPError) as unknown:
            await send(client, "tasks/update", taskId="0nope", inputResponses={"input-1": accept})
    assert unknown.value.code == -32602
    assert waiting["status"] == "input_required"
    assert waiting["inputRequests"] == {
        "input-1": {"method": "elicitation/create", "params": asked}
    }
    assert not_an_object.value.code == -32602
    assert "inputResponses['input-1']" in not_an_object.value.message
    assert ack["resultType"] == "complete"
    assert not TASK_FIELDS & ack.keys()
    assert working["status"] == "working"
    assert "inputRequests" not in working
    [(worker, frame)] = store.ports.answers
    answer = frame.decode()
    assert worker == "raybus/fake/worker"
    assert isinstance(answer, Response)
    assert (answer.id, answer.result) == ("w#1", accept)


async def test_an_input_first_tool_asks_synchronously_and_its_answered_call_becomes_the_task() -> (
    None
):
    bus, store = fake_bus(), FakeTaskStore()
    pool = PoolTasksConfig.model_validate({"tools": {"echo": "required"}, "input_first": ["echo"]})
    tasks = GatewayTasks(store, {"fake": pool}, authenticated=True, configured=True)
    answered = {"user_name": {"action": "accept", "content": {"name": "Alice"}}}
    async with declaring(Gateway(bus, tasks=tasks)) as client:
        first_round = await send(client, "tools/call", name="echo", arguments={"text": "hi"})
        assert store.created == []  # run synchronously: the tool asks its input first
        created = await send(
            client,
            "tools/call",
            name="echo",
            arguments={"text": "hi"},
            inputResponses=answered,
            requestState="sealed",
        )
    assert first_round["content"] == [{"type": "text", "text": "hi"}]
    assert created["resultType"] == "task"
    assert not {"requestState", "inputRequests"} & created.keys()
    [spec] = store.created
    assert (spec.call_params["inputResponses"], spec.call_params["requestState"]) == (
        answered,
        "sealed",
    )
    envelope = spec.call_params["_meta"]
    assert envelope["io.modelcontextprotocol/protocolVersion"] == VERSION
    # The task is the gateway's: the tool's server is not told the client takes tasks.
    extensions = envelope["io.modelcontextprotocol/clientCapabilities"].get("extensions", {})
    assert TASKS_EXTENSION not in extensions
    [submitted] = store.ports.submitted
    request = submitted.decode()
    assert isinstance(request, Request)
    assert isinstance(request.params, dict)
    assert request.params["inputResponses"] == answered
    assert request.params["_meta"]["progressToken"] == created["taskId"]


async def test_cancel_and_update_answer_an_empty_ack_even_once_the_task_ended() -> None:
    store = FakeTaskStore()
    async with declaring(gateway(fake_bus(), store)) as client:
        task_id = (await call(client, "echo", arguments={"text": "x"}))["taskId"]
        first = await send(client, "tasks/cancel", taskId=task_id)
        again = await send(client, "tasks/cancel", taskId=task_id)
        update = await send(client, "tasks/update", taskId=task_id, inputResponses={"k": {}})
        status = (await send(client, "tasks/get", taskId=task_id))["status"]
        with pytest.raises(mcp.MCPError) as unknown:
            await send(client, "tasks/get", taskId="tasks-conformance-nonexistent-12345")
    for ack in (first, again, update):
        assert ack["resultType"] == "complete"
        assert not TASK_FIELDS & ack.keys()
    assert status == "cancelled"
    assert len(store.ports.cancelled) == 1
    assert unknown.value.code == -32602


async def test_a_client_that_does_not_declare_the_extension_is_refused_with_32021() -> None:
    bus, store = fake_bus(), FakeTaskStore()
    async with mcp.Client(gateway(bus, store).server) as client:
        for method in ("tasks/get", "tasks/update", "tasks/cancel"):
            with pytest.raises(mcp.MCPError) as refused:
                await send(client, method, taskId="gate-test", inputResponses={})
            assert (refused.value.code, refused.value.data) == (-32021, REQUIRED)
        with pytest.raises(mcp.MCPError) as required:
            await client.call_tool("count", {"steps": 1})
        # An optional tool runs synchronously; the legacy params.task is ignored.
        plain = await call(client, "echo", arguments={"text": "hi"}, task=types.TaskMetadata())
    assert (required.value.code, required.value.data) == (-32021, REQUIRED)
    assert plain["content"] == [{"type": "text", "text": "hi"}]
    assert plain["resultType"] == "complete"
    assert store.created == []
    assert "task" not in bus.calls[-1].params


async def test_the_2025_only_methods_do_not_exist_on_2026() -> None:
    async with declaring(gateway(fake_bus(), FakeTaskStore())) as client:
        for method in ("tasks/result", "tasks/list"):
            with pytest.raises(mcp.MCPError) as missing:
                await send(client, method, taskId="x")
            assert missing.value.code == -32601
    async with mcp.Client(gateway(fake_bus(), FakeTaskStore()).server, mode="legacy") as old:
        with pytest.raises(mcp.MCPError) as legacy:
            await send(old, "tasks/update", taskId="x", inputResponses={})
    assert legacy.value.code == -32601


# -- over HTTP -------------------------------------------------------------------------

DECLARED_META = {
    "io.modelcontextprotocol/protocolVersion": VERSION,
    "io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS_EXTENSION: {}}},
}


async def post(
    url: str, method: str, params: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": method,
        "params": {**params, "_meta": DECLARED_META},
    }
    sent = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": VERSION,
        "mcp-method": method,
        **headers,
    }
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(url, json=body, headers=sent)


@pytest.fixture
async def url() -> AsyncIterator[tuple[str, FakeTaskStore]]:
    store = FakeTaskStore()
    async with serving(gateway(fake_bus(), store)) as served:
        yield served, store


async def test_over_http_a_task_is_created_on_the_direct_path_and_mcp_name_is_checked(
    url: tuple[str, FakeTaskStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, store = url
    direct = Gateway.call_tool_directly
    served_directly: list[str] = []

    async def counting(self: Gateway, *args: Any, **kwargs: Any) -> dict[str, Any]:
        served_directly.append(str(args[2]["name"]))
        return await direct(self, *args, **kwargs)

    monkeypatch.setattr(Gateway, "call_tool_directly", counting)
    created = await post(
        address, "tools/call", {"name": "echo", "arguments": {"text": "x"}}, {"mcp-name": "echo"}
    )
    assert created.status_code == 200
    task = created.json()["result"]
    assert task["resultType"] == "task"
    task_id = task["taskId"]
    assert [spec.tool for spec in store.created] == ["echo"]
    assert served_directly == ["echo"]
    named = await post(address, "tasks/get", {"taskId": task_id}, {"mcp-name": task_id})
    assert named.json()["result"]["status"] == "working"
    for headers in ({"mcp-name": "another-task"}, {}):
        wrong = await post(address, "tasks/get", {"taskId": task_id}, headers)
        assert wrong.status_code == 400
        assert wrong.json()["error"]["code"] == -32020
        cancel = await post(address, "tasks/cancel", {"taskId": task_id}, headers)
        assert cancel.json()["error"]["code"] == -32020
    assert store.ports.cancelled == []  # refused before anything was done


async def test_over_websocket_tasks_need_no_mcp_name_header(
    url: tuple[str, FakeTaskStore],
) -> None:
    import websockets

    address, store = url
    ws_url = address.replace("http://", "ws://").replace("/mcp", "/ws")
    async with asyncio.timeout(30), websockets.connect(ws_url, subprotocols=["mcp"]) as ws:  # type: ignore[list-item]

        async def ask(request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
            body = {"jsonrpc": "2.0", "id": request_id, "method": method}
            await ws.send(json.dumps({**body, "params": {**params, "_meta": DECLARED_META}}))
            answer: dict[str, Any] = json.loads(await ws.recv())
            return answer

        created = await ask(1, "tools/call", {"name": "echo", "arguments": {"text": "x"}})
        task_id = created["result"]["taskId"]
        polled = await ask(2, "tasks/get", {"taskId": task_id})
    assert polled["result"]["status"] == "working"
    assert [spec.tool for spec in store.created] == ["echo"]
