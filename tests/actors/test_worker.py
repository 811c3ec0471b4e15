"""The worker and its hosted session, driven without Ray against real SDK servers."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from actors.router.outcomes import CallOutcome
from actors.worker.core import WorkerCore, WorkerIdentity
from actors.worker.hosted_server import HostedServer
from actors.worker.sdk_link import SdkServerLink, load_server_object
from actors.worker.server_links import StdioServerLink
from tests.actors.fakes import RecordingWorkerPorts
from tests.waiting import wait_until
from transports.envelope import Envelope
from transports.errors import BusErrorCode
from transports.frame import Frame
from transports.message import Notification, Request, Response

WORKER = "worker-1"


def request_frame(
    client: str, request_id: int, method: str, params: dict[str, Any], **envelope: Any
) -> Frame:
    env = Envelope(
        client_id=client,
        request_id=str(request_id),
        reply_to=f"endpoint-{client}",
        method=method,
        name=params.get("name") or params.get("uri"),
        **envelope,
    )
    return Frame.of(env, Request(id=request_id, method=method, params=params))


def tool_call(client: str, request_id: int, tool: str, **arguments: Any) -> Frame:
    return request_frame(client, request_id, "tools/call", {"name": tool, "arguments": arguments})


async def make_worker(link_factory: Any, ports: RecordingWorkerPorts) -> WorkerCore:
    hosted = HostedServer(link_factory, sink=ports.reply, address=WORKER)
    worker = WorkerCore(WorkerIdentity("s1", "pool", WORKER, capacity=8), hosted, ports)
    async with asyncio.timeout(30):
        await worker.start()
    return worker


@pytest.fixture
async def testkit() -> AsyncIterator[tuple[WorkerCore, RecordingWorkerPorts]]:
    ports = RecordingWorkerPorts()
    server = load_server_object("cluster.examples.testkit:server")
    worker = await make_worker(lambda: SdkServerLink(server), ports)
    yield worker, ports
    await worker.drain(0, timeout_s=5)


async def test_the_worker_reads_the_servers_catalog_at_start(
    testkit: tuple[WorkerCore, RecordingWorkerPorts],
) -> None:
    worker, _ = testkit
    catalog = worker.hosted.catalog
    assert {"echo", "nap", "ask"} <= {t["name"] for t in catalog.tools}
    assert [r["uri"] for r in catalog.resources] == ["testkit://greeting"]
    assert [p["name"] for p in catalog.prompts] == ["summarize"]
    assert catalog.digest


async def test_clients_with_colliding_ids_each_get_their_own_answer(
    testkit: tuple[WorkerCore, RecordingWorkerPorts],
) -> None:
    worker, ports = testkit
    worker.deliver([tool_call(f"c{i}", 1, "echo", text=f"from c{i}") for i in range(5)])
    replies = await ports.wait_for(Response, count=5)
    for frame in replies:
        response = frame.decode()
        assert isinstance(response, Response)
        assert response.id == 1
        client = frame.envelope.client_id
        assert response.result["structuredContent"] == {"result": f"from {client}"}
    assert {d for d, _ in ports.sent} == {f"endpoint-c{i}" for i in range(5)}
    assert len(ports.completions) == 5
    assert not any(c.failed for c in ports.completions)


async def test_progress_goes_to_the_caller_with_its_own_token(
    testkit: tuple[WorkerCore, RecordingWorkerPorts],
) -> None:
    worker, ports = testkit
    frames = [
        request_frame(
            client,
            7,
            "tools/call",
            {
                "name": "count_with_progress",
                "arguments": {"steps": 3},
                "_meta": {"progressToken": "t"},
            },
        )
        for client in ("a", "b")
    ]
    worker.deliver(frames)
    await ports.wait_for(Response, count=2)
    for client in ("a", "b"):
        progress = [
            f.decode()
            for d, f in ports.sent
            if d == f"endpoint-{client}" and isinstance(f.decode(), Notification)
        ]
        assert [
            n.params["progress"]
            for n in progress
            if isinstance(n, Notification) and isinstance(n.params, dict)
        ] == [1, 2, 3]
        assert all(
            isinstance(n, Notification)
            and isinstance(n.params, dict)
            and n.params["progressToken"] == "t"
            for n in progress
        )


async def test_logs_and_sampling_requests_reach_the_owning_client_and_answers_return(
    testkit: tuple[WorkerCore, RecordingWorkerPorts],
) -> None:
    worker, ports = testkit
    worker.deliver(
        [tool_call("a", 1, "shout", message="hi"), tool_call("b", 1, "ask", question="2+2?")]
    )
    [sampling] = await ports.wait_for(Request)
    assert sampling.envelope.client_id == "b"
    assert sampling.envelope.reply_to == WORKER
    sampling_request = sampling.decode()
    assert isinstance(sampling_request, Request)
    assert sampling_request.method == "sampling/createMessage"
    answer = Response.success(
        sampling_request.id,
        {"role": "assistant", "content": {"type": "text", "text": "4"}, "model": "m"},
    )
    await worker.answer([Frame.of(sampling.envelope, answer)])
    replies = await ports.wait_for(Response, count=2)
    by_client = {f.envelope.client_id: f.decode() for f in replies}
    b_result = by_client["b"]
    assert isinstance(b_result, Response)
    assert b_result.result["content"][0]["text"] == "4"
    logs = [f for d, f in ports.sent if isinstance(f.decode(), Notification)]
    assert [f.envelope.client_id for f in logs] == ["a"]


async def test_a_cancelled_call_stops_on_the_server(
    testkit: tuple[WorkerCore, RecordingWorkerPorts], tmp_path: Path
) -> None:
    worker, ports = testkit
    marker = tmp_path / "cancelled"
    frame = tool_call("a", 1, "nap", seconds=60, marker=str(marker))
    worker.deliver([frame])
    await wait_until(lambda: worker.hosted.in_flight == 1)
    await worker.cancel([frame.envelope.correlation_key])
    await wait_until(marker.exists)
    await wait_until(lambda: worker.in_flight == 0)
    assert not [f for _, f in ports.sent if isinstance(f.decode(), Response)]
    [completion] = ports.completions
    assert completion.abandoned
    assert not completion.failed
    assert completion.outcome is CallOutcome.CANCELLED


async def test_a_call_past_its_deadline_is_answered_and_is_no_verdict_on_the_pool(
    testkit: tuple[WorkerCore, RecordingWorkerPorts],
) -> None:
    worker, ports = testkit
    frame = tool_call("a", 1, "nap", seconds=30)
    frame = Frame(frame.envelope.with_deadline_in(0.2), frame.body)
    worker.deliver([frame])
    [reply] = await ports.wait_for(Response)
    response = reply.decode()
    assert isinstance(response, Response)
    assert response.error is not None
    assert response.error.code == BusErrorCode.DEADLINE_EXCEEDED
    # The caller's deadline passed: not a server failure, so the breaker must not count it.
    [completion] = ports.completions
    assert completion.abandoned
    assert not completion.failed
    assert completion.outcome is CallOutcome.TIMEOUT


async def test_a_completion_tells_a_result_from_a_tool_error_and_a_server_error(
    testkit: tuple[WorkerCore, RecordingWorkerPorts],
) -> None:
    worker, ports = testkit
    worker.deliver(
        [
            tool_call("a", 1, "echo", text="hi"),
            tool_call("a", 2, "fail", reason="no"),
            request_frame("a", 3, "prompts/get", {"name": "nope"}),
        ]
    )
    await ports.wait_for(Response, count=3)
    outcomes = {c.key[2]: c.outcome for c in ports.completions}
    assert outcomes == {"1": CallOutcome.OK, "2": CallOutcome.TOOL_ERROR, "3": CallOutcome.ERROR}


async def test_the_pools_deadline_ends_a_call_without_one_and_cancels_the_tool(
    tmp_path: Path,
) -> None:
    ports = RecordingWorkerPorts()
    server = load_server_object("cluster.examples.testkit:server")
    hosted = HostedServer(lambda: SdkServerLink(server), sink=ports.reply, address=WORKER)
    identity = WorkerIdentity("s1", "pool", WORKER, capacity=8)
    worker = WorkerCore(identity, hosted, ports, call_timeout_s=0.5)
    async with asyncio.timeout(30):
        await worker.start()
    try:
        marker = tmp_path / "cancelled"
        # No deadline in the envelope: only the pool's bounds the call.
        worker.deliver([tool_call("a", 1, "nap", seconds=1e9, marker=str(marker))])
        [reply] = await ports.wait_for(Response, timeout_s=30)
        response = reply.decode()
        assert isinstance(response, Response)
        assert response.error is not None
        assert response.error.code == BusErrorCode.DEADLINE_EXCEEDED
        await wait_until(marker.exists, timeout_s=30)
        assert worker.in_flight == 0
    finally:
        await worker.drain(0, timeout_s=5)


async def test_drain_waits_for_batches_in_transit_and_finishes_every_call(
    testkit: tuple[WorkerCore, RecordingWorkerPorts],
) -> None:
    worker, ports = testkit
    worker.deliver([tool_call("a", 1, "nap", seconds=0.3)])
    drain = asyncio.create_task(worker.drain(frames_sent=2, timeout_s=60))
    await asyncio.sleep(0)
    worker.deliver([tool_call("a", 2, "nap", seconds=0.1)])  # sent before the drain began
    assert await asyncio.wait_for(drain, 90)
    replies = [f.decode() for _, f in ports.sent]
    assert sorted(r.id for r in replies if isinstance(r, Response) and isinstance(r.id, int)) == [
        1,
        2,
    ]
    assert all(isinstance(r, Response) and r.error is None for r in replies)


async def test_a_stdio_server_command_is_hosted_the_same_way() -> None:
    ports = RecordingWorkerPorts()
    command = [sys.executable, "-m", "cluster.examples.testkit"]
    worker = await make_worker(lambda: StdioServerLink(command), ports)
    try:
        worker.deliver(
            [tool_call("a", 1, "echo", text="over stdio"), tool_call("b", 1, "echo", text="too")]
        )
        replies = await ports.wait_for(Response, count=2)
        texts = {f.envelope.client_id: f.decode() for f in replies}
        a = texts["a"]
        assert isinstance(a, Response)
        assert a.result["structuredContent"] == {"result": "over stdio"}
    finally:
        await worker.drain(0, timeout_s=5)


async def test_a_stdio_server_that_dies_fails_its_calls_and_is_restarted(tmp_path: Path) -> None:
    ports = RecordingWorkerPorts()
    command = [sys.executable, "-m", "cluster.examples.testkit"]
    hosted = HostedServer(
        lambda: StdioServerLink(command),
        sink=ports.reply,
        address=WORKER,
        restart_backoff_s=(0.05, 0.5),
    )
    worker = WorkerCore(WorkerIdentity("s1", "pool", WORKER, capacity=8), hosted, ports)
    await asyncio.wait_for(worker.start(), 30)
    try:
        worker.deliver([tool_call("a", 1, "nap", seconds=30)])
        await wait_until(lambda: hosted.in_flight == 1)
        link = hosted._link
        assert isinstance(link, StdioServerLink)
        assert link._transport is not None
        link._transport.process.kill()
        [reply] = await ports.wait_for(Response)
        response = reply.decode()
        assert isinstance(response, Response)
        assert response.error is not None
        assert response.error.code == BusErrorCode.UPSTREAM_FAILED
        async with asyncio.timeout(30):
            await hosted.connected.wait()
        assert hosted.restarts == 1
        worker.deliver([tool_call("a", 2, "echo", text="back")])
        replies = await ports.wait_for(Response, count=2)
        assert replies[-1].decode() == Response.success(2, replies[-1].decode().result)  # type: ignore[union-attr]
    finally:
        await worker.drain(0, timeout_s=5)
