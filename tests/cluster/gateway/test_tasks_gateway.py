"""MCP tasks (2025-11-25) at the gateway over a fake bus and an in-memory task store.

The official SDK client talks to the gateway's SDK server in process (principal
``anonymous``); the store is the real store core (``fake_tasks``). What needs a real bus,
HTTP and two principals is in ``test_tasks_over_http``.
"""

from __future__ import annotations

import json
from pathlib import Path

import mcp
import mcp_types as types
import pytest

from actors.discovery.catalog import Catalog
from actors.tasks.model import RELATED_TASK_META
from cluster.gateway.policy.chain import PolicyConfig
from cluster.gateway.server import Gateway
from cluster.gateway.tasks import GatewayTasks
from cluster.tasks.settings import PoolTasksConfig
from tests.cluster.gateway.fake_bus import FakeBus, fake_bus, text_result
from tests.cluster.gateway.fake_tasks import FakeTaskStore
from tests.cluster.gateway.task_requests import (
    create_task,
    task_cancel,
    task_get,
    task_list,
    task_result,
)

TOOL_ERROR = {"content": [{"type": "text", "text": "the disk is full"}], "isError": True}


def gateway_with_tasks(
    bus: FakeBus,
    store: FakeTaskStore,
    tools: dict[str, str] | None = None,
    *,
    authenticated: bool = False,
) -> Gateway:
    pool = PoolTasksConfig.model_validate({"tools": tools}) if tools else None
    tasks = GatewayTasks(store, {"fake": pool}, authenticated=authenticated, configured=bool(tools))
    return Gateway(bus, tasks=tasks)


def legacy_client(gateway: Gateway) -> mcp.Client:
    return mcp.Client(gateway.server, mode="legacy")


async def test_without_authentication_tasks_list_is_neither_declared_nor_served() -> None:
    gateway = gateway_with_tasks(fake_bus(), FakeTaskStore(), {"echo": "optional"})
    async with legacy_client(gateway) as client:
        tasks = client.server_capabilities.tasks
        assert tasks is not None
        assert tasks.cancel is not None
        assert tasks.list is None
        with pytest.raises(mcp.MCPError) as refused:
            await task_list(client)
    assert refused.value.code == -32601


async def test_a_bus_without_task_tools_declares_no_tasks_and_ignores_params_task() -> None:
    bus, store = fake_bus(), FakeTaskStore()
    async with legacy_client(gateway_with_tasks(bus, store)) as client:
        assert client.server_capabilities.tasks is None
        listed = (await client.list_tools()).tools
        assert all(tool.execution is None for tool in listed)
        # Processed normally: the answer is the tool's own result, no task is made.
        answer = await client.session._dispatcher.send_raw_request(
            "tools/call", {"name": "echo", "arguments": {"text": "hi"}, "task": {"ttl": 1000}}
        )
        with pytest.raises(mcp.MCPError) as not_served:
            await task_get(client, "0anything")
    assert answer["content"] == [{"type": "text", "text": "hi"}]
    assert store.created == []
    assert "task" not in bus.calls[-1].params
    assert not_served.value.code == -32601


async def test_a_tool_error_shows_failed_and_tasks_result_returns_the_result_itself() -> None:
    store = FakeTaskStore()
    gateway = gateway_with_tasks(fake_bus(), store, {"echo": "optional"})
    async with legacy_client(gateway) as client:
        created = await create_task(client, "echo", {"text": "x"})
        task_id = created.task.task_id
        assert store.created[0].arguments == {"text": "x"}
        await store.answer(task_id, result=TOOL_ERROR)
        failed = await task_get(client, task_id)
        result = await task_result(client, task_id)
        with pytest.raises(mcp.MCPError) as ended:
            await task_cancel(client, task_id)
    assert failed.status == "failed"  # 2025-11-25: an isError result is a failed task
    assert failed.status_message == "the disk is full"
    assert result.is_error is True
    assert result.content == [types.TextContent(text="the disk is full")]
    assert result.meta == {RELATED_TASK_META: {"taskId": task_id}}
    assert ended.value.code == -32602
    assert ended.value.message == "Cannot cancel task: already in terminal status 'failed'"


async def test_tasks_result_answers_the_calls_own_json_rpc_error() -> None:
    store = FakeTaskStore()
    gateway = gateway_with_tasks(fake_bus(), store, {"echo": "optional"})
    async with legacy_client(gateway) as client:
        created = await create_task(client, "echo", {"text": "x"})
        task_id = created.task.task_id
        error = {"code": -32603, "message": "the server broke", "data": {"why": "bug"}}
        await store.answer(task_id, error=error)
        with pytest.raises(mcp.MCPError) as outcome:
            await task_result(client, task_id)
        assert (await task_get(client, task_id)).status == "failed"
    assert (outcome.value.code, outcome.value.message) == (-32603, "the server broke")
    assert outcome.value.data == {"why": "bug"}


async def test_a_completed_task_cannot_be_cancelled() -> None:
    store = FakeTaskStore()
    gateway = gateway_with_tasks(fake_bus(), store, {"echo": "optional"})
    async with legacy_client(gateway) as client:
        task_id = (await create_task(client, "echo", {"text": "x"})).task.task_id
        await store.answer(task_id, result=text_result("x"))
        with pytest.raises(mcp.MCPError) as ended:
            await task_cancel(client, task_id)
        assert (await task_get(client, task_id)).status == "completed"
    assert ended.value.message == "Cannot cancel task: already in terminal status 'completed'"
    assert store.ports.cancelled == []


async def test_the_requested_ttl_is_passed_on_and_a_malformed_one_refused() -> None:
    store = FakeTaskStore()
    gateway = gateway_with_tasks(fake_bus(), store, {"echo": "optional"})
    async with legacy_client(gateway) as client:
        await create_task(client, "echo", {"text": "x"}, ttl_ms=90_000_000)
        for task in ({"ttl": -5}, {"ttl": "soon"}, "now"):
            with pytest.raises(mcp.MCPError) as refused:
                await client.session._dispatcher.send_raw_request(
                    "tools/call", {"name": "echo", "arguments": {}, "task": task}
                )
            assert refused.value.code == -32602
            assert "params.task" in refused.value.message
    assert [spec.ttl_s for spec in store.created] == [90_000.0]


async def test_required_and_forbidden_tools_are_refused_with_method_not_found() -> None:
    bus, store = fake_bus(), FakeTaskStore()
    gateway = gateway_with_tasks(bus, store, {"echo": "optional", "count": "required"})
    async with legacy_client(gateway) as client:
        support = {t.name: t.execution for t in (await client.list_tools()).tools}
        with pytest.raises(mcp.MCPError) as required:
            await client.call_tool("count", {"steps": 1})
        with pytest.raises(mcp.MCPError) as forbidden:
            await create_task(client, "overloaded", {})
    assert support["echo"] == types.ToolExecution(task_support="optional")
    assert support["count"] == types.ToolExecution(task_support="required")
    assert support["overloaded"] is None
    assert required.value.code == forbidden.value.code == -32601
    assert "runs only as a task" in required.value.message
    assert "does not run as a task" in forbidden.value.message
    assert bus.calls == []
    assert store.created == []


async def test_a_tasks_result_is_redacted_as_a_synchronous_result_would_be() -> None:
    store = FakeTaskStore()
    pool = PoolTasksConfig.model_validate({"tools": {"echo": "optional"}})
    tasks = GatewayTasks(store, {"fake": pool}, authenticated=False, configured=True)
    gateway = Gateway(fake_bus(), policy=PolicyConfig(redact_results=True), tasks=tasks)
    async with legacy_client(gateway) as client:
        task_id = (await create_task(client, "echo", {"text": "x"})).task.task_id
        await store.answer(task_id, result=text_result("write to jane@example.com"))
        result = await task_result(client, task_id)
    assert result.content == [types.TextContent(text="write to [REDACTED:email]")]
    assert result.meta == {RELATED_TASK_META: {"taskId": task_id}}


async def test_the_audit_names_the_task_a_call_made_and_each_task_request_it_targets(
    tmp_path: Path,
) -> None:
    store, audit = FakeTaskStore(), tmp_path / "audit.jsonl"
    pool = PoolTasksConfig.model_validate({"tools": {"echo": "optional"}})
    tasks = GatewayTasks(store, {"fake": pool}, authenticated=False, configured=True)
    gateway = Gateway(fake_bus(), policy=PolicyConfig(audit_path=str(audit)), tasks=tasks)
    async with legacy_client(gateway) as client:
        task_id = (await create_task(client, "echo", {"text": "x"})).task.task_id
        await task_get(client, task_id)
        await task_cancel(client, task_id)
    await gateway.aclose()
    records = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()]
    seen = [(r["method"], r.get("target"), r["outcome"]) for r in records]
    assert seen[-3:] == [
        ("tools/call", None, f"task {task_id}"),
        ("tasks/get", task_id, "ok"),
        ("tasks/cancel", task_id, "ok"),
    ]


async def test_a_server_declaring_task_support_itself_turns_tasks_on_at_the_first_handshake() -> (
    None
):
    bus, store = fake_bus(), FakeTaskStore()
    declared = {"name": "slow", "inputSchema": {"type": "object"}}
    declared["execution"] = {"taskSupport": "optional"}
    bus.catalog = Catalog.of(tools=[*bus.catalog.tools, declared])
    tasks = GatewayTasks(store, {"fake": None}, authenticated=False, configured=False)
    async with legacy_client(Gateway(bus, tasks=tasks)) as client:
        assert client.server_capabilities.tasks is not None
        created = await create_task(client, "slow", {})
    assert created.task.status == "working"
    tasks = GatewayTasks(FakeTaskStore(), {"fake": None}, authenticated=False, configured=False)
    async with mcp.Client(Gateway(bus, tasks=tasks).server) as modern:
        extensions = modern.server_capabilities.extensions or {}
        assert extensions["io.modelcontextprotocol/tasks"] == {}
