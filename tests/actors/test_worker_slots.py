"""A worker runs at most its capacity, whoever sent the calls: clients' direct calls can
fill slots the router has not heard of yet, and the router's calls then wait on the
worker (counted by the router as queued), never run past the capacity."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from actors.router.completion import DirectReport
from actors.worker.core import WorkerCore, WorkerIdentity
from actors.worker.hosted_server import HostedServer
from actors.worker.sdk_link import SdkServerLink, load_server_object
from tests.actors.fakes import RecordingWorkerPorts
from tests.actors.test_router import call
from tests.actors.test_router_metrics import measured_router
from tests.actors.test_worker import WORKER, tool_call
from transports.errors import BusErrorCode
from transports.message import Response


@pytest.fixture
async def two_slots() -> AsyncIterator[tuple[WorkerCore, RecordingWorkerPorts, list[int]]]:
    ports = RecordingWorkerPorts()
    heard: list[int] = []
    server = load_server_object("cluster.examples.testkit:server")
    hosted = HostedServer(lambda: SdkServerLink(server), sink=ports.reply, address=WORKER)
    identity = WorkerIdentity("s1", "pool", WORKER, capacity=2)
    worker = WorkerCore(identity, hosted, ports, on_waiting=heard.append)
    async with asyncio.timeout(30):
        await worker.start()
    yield worker, ports, heard
    await worker.drain(0, timeout_s=5)


def answered_ids(ports: RecordingWorkerPorts) -> list[str]:
    return [str(f.envelope.request_id) for _, f in ports.sent if isinstance(f.decode(), Response)]


async def test_routed_calls_wait_for_slots_direct_calls_took_and_run_after_them(
    two_slots: tuple[WorkerCore, RecordingWorkerPorts, list[int]],
) -> None:
    worker, ports, heard = two_slots
    direct = [tool_call("lane", n, "nap", seconds=0.2) for n in (1, 2)]
    routed = [tool_call("router", n, "nap", seconds=0.0) for n in (3, 4)]
    worker.deliver(direct, routed=False)
    worker.deliver(routed)
    assert (worker.in_flight, worker.waiting) == (4, 2)  # two run, two wait
    assert heard == [1, 2]
    await ports.wait_for(Response, count=4)
    # The routed calls started only once the direct ones ended, so they end after them.
    assert sorted(answered_ids(ports)[:2]) == ["1", "2"]
    assert sorted(answered_ids(ports)[2:]) == ["3", "4"]
    assert heard[-1] == 0
    assert (worker.in_flight, worker.waiting) == (0, 0)


async def test_a_waiting_call_that_is_cancelled_never_runs_and_ends_as_cancelled(
    two_slots: tuple[WorkerCore, RecordingWorkerPorts, list[int]],
) -> None:
    worker, ports, heard = two_slots
    worker.deliver([tool_call("lane", n, "nap", seconds=0.2) for n in (1, 2)], routed=False)
    gone = tool_call("router", 3, "nap", seconds=0.0)
    worker.deliver([gone, tool_call("router", 4, "echo", text="x")])
    await worker.cancel([gone.envelope.correlation_key])
    assert worker.waiting == 1
    assert heard == [1, 2, 1]
    [cancelled] = [c for c in ports.completions if c.key == gone.envelope.correlation_key]
    assert cancelled.error_code == BusErrorCode.CANCELLED
    await ports.wait_for(Response, count=3)
    assert "3" not in answered_ids(ports)


async def test_routed_calls_alone_start_at_once_up_to_the_capacity(
    two_slots: tuple[WorkerCore, RecordingWorkerPorts, list[int]],
) -> None:
    worker, ports, heard = two_slots
    worker.deliver([tool_call("router", n, "echo", text="x") for n in (1, 2)])
    assert worker.waiting == 0
    await ports.wait_for(Response, count=2)
    assert heard == []  # nothing ever waited: the router is not told anything


def test_the_router_counts_calls_waiting_on_a_worker_as_queued_not_running() -> None:
    core, ports, _, _ = measured_router(("w1", 1))
    core.submit([call("a", 1)])  # sent to w1 before the router heard of its direct call
    assert len(ports.delivered) == 1
    core.direct_ended("w1", DirectReport("kit", 1, [], waiting=1))
    lag = core.lag()["kit"]
    assert (lag.queued, lag.in_flight) == (1, 1)  # one direct call runs, the routed waits
    core.submit([call("a", 2)])
    assert len(ports.delivered) == 1  # w1 is full: the next one stays at the router
    assert core.lag()["kit"].queued == 2
