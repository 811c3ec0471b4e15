"""MCP tasks through the gateway over real HTTP, on a real local Ray bus whose pool runs
the tasks fixture's tools: 2025-11-25 by the official SDK client, and one 2026-07-28
flow (the ``io.modelcontextprotocol/tasks`` extension) by raw requests on the same store.

The fixture's ``long_job`` leaves marker files (``.pid`` at start, ``.finished`` or
``.cancelled`` at the end), so the tests see what happened inside the worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import mcp
import mcp_types as types
import pytest
import pytest_asyncio
from mcp.client.streamable_http import streamable_http_client

from actors.tasks.model import RELATED_TASK_META
from cluster.gateway.policy.tokens import hash_token
from cluster.gateway.tasks_modern import TASKS_EXTENSION
from tests.cluster.bus_helpers import bus_config, running_gateway
from tests.cluster.gateway.task_requests import (
    create_task,
    task_cancel,
    task_get,
    task_list,
    task_result,
)
from tests.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module")]

ALICE, BOB = "alice-task-token-0123456789", "bob-task-token-9876543210"
# Bounds for a cold, loaded 2-core machine: they stop a hang, they measure nothing.
_OUTCOME_S = 120.0
NOT_FOUND = "Failed to retrieve task: Task not found"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def url(ray_session: None) -> AsyncIterator[str]:
    policy = {
        "tokens": [
            {"principal": "alice", "sha256": hash_token(ALICE)},
            {"principal": "bob", "sha256": hash_token(BOB)},
        ]
    }
    config = bus_config(
        [
            {
                "name": "jobs",
                "server": "cluster.examples.tasks_fixture:server",
                "min_workers": 2,
                "tasks": {
                    "tools": {"long_job": "optional", "report": "required"},
                    "run_timeout_s": 600,
                },
            }
        ],
        gateway={"policy": policy},
    )
    async with running_gateway(config) as served:
        yield served


def client_for(url: str, token: str) -> mcp.Client:
    # The SDK's own timeouts (30 s, SSE reads 300 s): tasks/result is silent until its
    # task ends, and httpx's default 5 s read timeout would give up on it first.
    timeout = httpx.Timeout(30.0, read=300.0)
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
    return mcp.Client(streamable_http_client(url, http_client=http), mode="legacy")


def left(job: Path, suffix: str) -> bool:
    """Did the fixture tool leave ``<job>.<suffix>``?"""
    return Path(f"{job}.{suffix}").exists()


async def test_the_gateway_declares_tasks_and_each_tools_task_support(url: str) -> None:
    async with client_for(url, ALICE) as alice:
        tasks = alice.server_capabilities.tasks
        assert tasks is not None
        assert tasks.cancel is not None
        assert tasks.list is not None  # the gateway authenticates its callers
        assert tasks.requests is not None
        assert tasks.requests.tools is not None
        assert tasks.requests.tools.call is not None
        listed = {t.name: t.execution for t in (await alice.list_tools()).tools}
    assert listed["long_job"] is not None
    assert listed["long_job"].task_support == "optional"
    assert listed["report"] is not None
    assert listed["report"].task_support == "required"
    assert listed["quick"] is None  # forbidden: no execution.taskSupport shown


async def test_a_task_is_answered_at_once_and_its_result_served_when_it_ends(
    url: str, tmp_path: Path
) -> None:
    job = tmp_path / "job"
    async with client_for(url, ALICE) as alice:
        created = await create_task(
            alice, "long_job", {"seconds": 4, "step_s": 1, "marker": str(job)}, ttl_ms=600_000
        )
        assert not left(job, "finished")  # answered while the tool still runs
        task = created.task
        assert task.status == "working"
        assert task.ttl is not None
        assert task.ttl >= 600_000
        assert task.created_at
        assert task.last_updated_at
        assert task.poll_interval
        polled = await task_get(alice, task.task_id)
        assert polled.task_id == task.task_id
        assert polled.status == "working"
        result = await task_result(alice, task.task_id)  # blocks until the task ends
        assert left(job, "finished")
        assert isinstance(result.content[0], types.TextContent)
        assert result.content[0].text == "done after 4 steps"
        assert result.is_error is False
        assert result.meta is not None
        assert result.meta[RELATED_TASK_META] == {"taskId": task.task_id}
        done = await task_get(alice, task.task_id)
        assert done.status == "completed"
        assert done.ttl == task.ttl
        again = await task_result(alice, task.task_id)  # served as often as asked
        assert again.content == result.content


async def test_a_cancelled_task_stops_its_tool_and_stays_cancelled(
    url: str, tmp_path: Path
) -> None:
    job = tmp_path / "cancelled"
    async with client_for(url, ALICE) as alice:
        created = await create_task(
            alice, "long_job", {"seconds": 300, "step_s": 1, "marker": str(job)}
        )
        task_id = created.task.task_id
        await wait_until(lambda: left(job, "pid"), _OUTCOME_S)
        cancelled = await task_cancel(alice, task_id)
        assert cancelled.task_id == task_id
        assert cancelled.status == "cancelled"
        await wait_until(lambda: left(job, "cancelled"), _OUTCOME_S)  # the worker stopped it
        assert not left(job, "finished")
        assert (await task_get(alice, task_id)).status == "cancelled"
        with pytest.raises(mcp.MCPError) as again:
            await task_cancel(alice, task_id)
        assert again.value.code == -32602
        assert "already in terminal status 'cancelled'" in again.value.message
        with pytest.raises(mcp.MCPError) as outcome:
            await task_result(alice, task_id)
        assert "cancelled" in outcome.value.message


async def test_another_principal_cannot_see_or_touch_a_task(url: str) -> None:
    async with client_for(url, ALICE) as alice, client_for(url, BOB) as bob:
        created = await create_task(alice, "long_job", {"seconds": 1, "step_s": 1})
        task_id = created.task.task_id
        for ask in (task_get, task_result, task_cancel):
            with pytest.raises(mcp.MCPError) as foreign:
                await ask(bob, task_id)
            with pytest.raises(mcp.MCPError) as unknown:
                await ask(bob, "0-no-such-task-id")
            # Indistinguishable from an id that does not exist.
            assert (foreign.value.code, foreign.value.message) == (-32602, NOT_FOUND)
            assert (unknown.value.code, unknown.value.message) == (-32602, NOT_FOUND)
        assert task_id not in {t.task_id for t in (await task_list(bob)).tasks}
        assert (await task_result(alice, task_id)).content  # still alice's, untouched


async def test_tasks_list_shows_the_callers_own_tasks(url: str) -> None:
    async with client_for(url, BOB) as bob:
        first = await create_task(bob, "report", {"title": "q1"})
        second = await create_task(bob, "report", {"title": "q2"})
        listed = await task_list(bob)
        ids = [t.task_id for t in listed.tasks]
        assert first.task.task_id in ids
        assert second.task.task_id in ids
        assert listed.next_cursor is None
        with pytest.raises(mcp.MCPError) as bad:
            await task_list(bob, cursor="not a cursor")
        assert bad.value.code == -32602
        report = await task_result(bob, second.task.task_id)
        assert isinstance(report.content[0], types.TextContent)
        assert report.content[0].text == "report 'q2' written"


async def test_task_support_is_enforced_per_tool(url: str) -> None:
    async with client_for(url, ALICE) as alice:
        with pytest.raises(mcp.MCPError) as required:
            await alice.call_tool("report", {"title": "sync"})
        assert required.value.code == -32601
        assert "params.task" in required.value.message
        with pytest.raises(mcp.MCPError) as forbidden:
            await create_task(alice, "quick", {"text": "hi"})
        assert forbidden.value.code == -32601
        assert "does not run as a task" in forbidden.value.message
        synchronous = await alice.call_tool("quick", {"text": "hi"})
        assert isinstance(synchronous.content[0], types.TextContent)
        assert synchronous.content[0].text == "HI"
        # An optional tool still runs synchronously when called without params.task.
        short = await alice.call_tool("long_job", {"seconds": 0.1, "step_s": 0.1})
        assert isinstance(short.content[0], types.TextContent)
        assert short.content[0].text == "done after 1 steps"


async def post_2026(url: str, token: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """One 2026-07-28 request declaring the tasks extension; its JSON-RPC response."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS_EXTENSION: {}}},
    }
    name = params.get("taskId", params.get("name"))
    headers = {
        "authorization": f"Bearer {token}",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": method,
        "mcp-name": str(name),
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": meta}}
    async with httpx.AsyncClient(timeout=_OUTCOME_S) as http:
        response = await http.post(url, json=body, headers=headers)
    answer: dict[str, Any] = response.json()
    return answer


async def test_a_2026_client_creates_polls_and_cancels_a_task_through_the_same_store(
    url: str, tmp_path: Path
) -> None:
    job = tmp_path / "modern"
    arguments = {"seconds": 300, "step_s": 1, "marker": str(job)}
    created = await post_2026(
        url, ALICE, "tools/call", {"name": "long_job", "arguments": arguments}
    )
    task = created["result"]
    assert task["resultType"] == "task"
    assert task["status"] == "working"
    task_id = task["taskId"]
    await wait_until(lambda: left(job, "pid"), _OUTCOME_S)
    polled = await post_2026(url, ALICE, "tasks/get", {"taskId": task_id})
    assert polled["result"]["status"] == "working"
    foreign = await post_2026(url, BOB, "tasks/get", {"taskId": task_id})
    assert foreign["error"]["code"] == -32602
    ack = await post_2026(url, ALICE, "tasks/cancel", {"taskId": task_id})
    assert ack["result"]["resultType"] == "complete"
    assert "status" not in ack["result"]
    await wait_until(lambda: left(job, "cancelled"), _OUTCOME_S)
    cancelled = await post_2026(url, ALICE, "tasks/get", {"taskId": task_id})
    assert cancelled["result"]["status"] == "cancelled"
    async with client_for(url, ALICE) as alice:  # the same task, seen from 2025-11-25
        assert (await task_get(alice, task_id)).status == "cancelled"
