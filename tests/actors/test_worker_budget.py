"""A pool's max_sync_s bounds synchronous calls, its task-only tools refuse them; a task's
call runs to its run timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from actors.worker.core import WorkerCore, WorkerIdentity
from actors.worker.hosted_server import HostedServer
from actors.worker.sdk_link import SdkServerLink, load_server_object
from tests.actors.fakes import RecordingWorkerPorts
from tests.actors.test_worker import WORKER, request_frame
from transports.errors import BusErrorCode
from transports.message import Response


@pytest.fixture
async def budgeted() -> AsyncIterator[tuple[WorkerCore, RecordingWorkerPorts]]:
    ports = RecordingWorkerPorts()
    server = load_server_object("cluster.examples.testkit:server")
    hosted = HostedServer(lambda: SdkServerLink(server), sink=ports.reply, address=WORKER)
    identity = WorkerIdentity("s1", "pool", WORKER, capacity=8)
    worker = WorkerCore(
        identity,
        hosted,
        ports,
        call_timeout_s=300,
        max_sync_s=0.3,
        task_timeout_s=300,
        task_only=lambda name: name == "echo",
    )
    async with asyncio.timeout(30):
        await worker.start()
    yield worker, ports
    await worker.drain(0, timeout_s=5)


async def test_a_synchronous_call_past_max_sync_s_is_told_to_run_as_a_task(
    budgeted: tuple[WorkerCore, RecordingWorkerPorts],
) -> None:
    worker, ports = budgeted
    worker.deliver(
        [request_frame("a", 1, "tools/call", {"name": "nap", "arguments": {"seconds": 60}})]
    )
    [reply] = await ports.wait_for(Response, timeout_s=30)
    response = reply.decode()
    assert isinstance(response, Response)
    assert response.error is not None
    assert response.error.code == BusErrorCode.DEADLINE_EXCEEDED
    assert "max_sync_s (0.3 s)" in response.error.message
    assert "start_tool" in response.error.message
    assert response.error.data == {"maxSyncSeconds": 0.3}


async def test_a_task_call_is_not_bounded_by_max_sync_s(
    budgeted: tuple[WorkerCore, RecordingWorkerPorts],
) -> None:
    worker, ports = budgeted
    params = {"name": "nap", "arguments": {"seconds": 1}}
    worker.deliver([request_frame("tasks", 1, "tools/call", params, attributes=(("task", "t"),))])
    [reply] = await ports.wait_for(Response, timeout_s=30)
    response = reply.decode()
    assert isinstance(response, Response)
    assert response.error is None
    assert response.result["content"][0]["text"] == "slept 1.0"


async def test_a_task_only_tool_refuses_a_synchronous_call_but_runs_a_task_call(
    budgeted: tuple[WorkerCore, RecordingWorkerPorts],
) -> None:
    worker, ports = budgeted
    params = {"name": "echo", "arguments": {"text": "hi"}}
    worker.deliver([request_frame("a", 1, "tools/call", params)])
    [refused] = await ports.wait_for(Response, timeout_s=30)
    response = refused.decode()
    assert isinstance(response, Response)
    assert response.error is not None
    assert response.error.code == -32021
    assert "runs only as a task" in response.error.message
    extensions = response.error.data["requiredCapabilities"]["extensions"]
    assert extensions == {"io.modelcontextprotocol/tasks": {}}
    worker.deliver([request_frame("tasks", 2, "tools/call", params, attributes=(("task", "t"),))])
    replies = await ports.wait_for(Response, count=2, timeout_s=30)
    answered = replies[-1].decode()
    assert isinstance(answered, Response)
    assert answered.error is None
