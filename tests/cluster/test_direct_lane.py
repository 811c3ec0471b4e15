"""The direct lane on a real local Ray: a client's ``tools/call`` goes straight to a
worker and its answer comes back as the call's return (cluster.backends.ray_direct)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
import pytest_asyncio
import ray

from cluster.backends.direct_socket import DirectSockets
from cluster.backends.ray_direct import DirectLane
from cluster.client import BusClient
from cluster.naming import actor_names, get_actor
from tests.cluster.bus_helpers import bus_config, running_bus
from tests.waiting import wait_until
from transports.envelope import Envelope
from transports.errors import BusErrorCode
from transports.frame import Frame
from transports.message import Request, Response

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module")]

SLOTS = 2
_ids = itertools.count(1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bus(ray_session: None) -> AsyncIterator[BusClient]:
    config = bus_config(
        [
            {
                "name": "kit",
                "server": "cluster.examples.testkit:server",
                "min_workers": 1,
                "max_workers": 1,
                "max_concurrency": SLOTS,
            }
        ]
    )
    async with running_bus(config) as client:
        await client.call_tool("echo", {"text": "warm"})
        yield client


class _RayCallsOnly(DirectSockets):
    """A lane that sends every direct call as a Ray actor call (no worker socket)."""

    def channel(self, worker: str, handle: Any) -> None:
        return None


class _Lane:
    """A lane as a client's link holds one, its hand-overs and router sends recorded.

    ``sockets``: whether it reaches workers on their Unix socket (see ready()), as a
    client on the worker's node does, or by Ray calls only, as one on another node does.
    """

    def __init__(self, bus: str, *, sockets: bool = True, holds: bool = False) -> None:
        self.answers: list[Frame] = []
        self.routed: list[Frame] = []
        self.sockets = sockets
        router = get_actor(actor_names.router(bus))
        self.lane = DirectLane(
            get_actor(actor_names.discovery(bus)),
            self._take,
            self.routed.extend,
            sockets=None if sockets else _RayCallsOnly(),
            # Holding calls for a slot, reporting them to the router as a link does.
            report_held=(lambda rows, ended: router.lane_held.remote("lane-test", rows, ended))
            if holds
            else None,
        )

    async def _take(self, frames: list[Frame]) -> None:
        self.answers.extend(frames)

    async def ready(self) -> None:
        """Wait (bounded) until the lane has read the pool's workers."""
        probe = nap(0.0)
        # take() reads membership again once a second: an empty batch asks for nothing else
        await wait_until(lambda: self.lane.take([]) == [] and self._read(), timeout_s=30)
        assert self.lane.take([probe]) == []
        await wait_until(lambda: len(self.answers) == 1, timeout_s=30)
        self.answers.clear()
        if self.sockets:  # the probe went by Ray while the socket was being connected
            worker = next(iter(self.lane._where.values()), None) or self._only_worker()
            await wait_until(lambda: self.lane.sockets.connected(worker), timeout_s=30)

    def _only_worker(self) -> str:
        membership = self.lane._membership
        assert membership is not None
        (info,) = membership.workers["kit"]
        return info.actor_name

    def _read(self) -> bool:
        return self.lane._membership is not None

    def answered(self, *frames: Frame) -> dict[str, Response]:
        keys = {f.envelope.request_id for f in frames}
        found: dict[str, Response] = {}
        for frame in self.answers:
            message = frame.decode()
            if frame.envelope.request_id in keys and isinstance(message, Response):
                found[frame.envelope.request_id] = message
        return found


def nap(seconds: float) -> Frame:
    n = next(_ids)
    envelope = Envelope(
        client_id="lane-test",
        request_id=str(n),
        reply_to="raybus/nobody/client/lane-test",  # answers ride on returns
        method="tools/call",
        name="nap",
    )
    params: dict[str, Any] = {"name": "nap", "arguments": {"seconds": seconds}}
    return Frame.of(envelope, Request(id=n, method="tools/call", params=params))


async def test_a_direct_call_is_answered_by_the_worker_and_counted_by_the_router(
    bus: BusClient,
) -> None:
    lane = _Lane(bus.bus)
    await lane.ready()
    router = get_actor(actor_names.router(bus.bus))
    calls = [nap(1.0), nap(1.0)]
    assert lane.lane.take(calls) == []  # nothing for the router: both went directly
    # The router never saw them, yet counts them (the autoscaler reads this).
    await wait_until(
        lambda: ray.get(router.lag.remote())["kit"]["in_flight"] == SLOTS, timeout_s=30
    )
    await wait_until(lambda: len(lane.answered(*calls)) == 2, timeout_s=60)
    assert all(r.error is None for r in lane.answered(*calls).values())
    assert lane.routed == []
    await lane.lane.close()


async def test_direct_calls_travel_the_workers_socket_and_each_gets_its_own_answer(
    bus: BusClient,
) -> None:
    lane = _Lane(bus.bus)
    await lane.ready()
    worker = lane._only_worker()
    channel = lane.lane.sockets.channel(worker, None)
    assert channel is not None
    sent_before = channel.requests_sent
    calls = [nap(0.0) for _ in range(40)]
    for call in calls:  # one at a time: forty batches, each answered on the socket
        assert lane.lane.take([call]) == []
        await wait_until(partial(_has_answer, lane, call), timeout_s=30)
    answers = lane.answered(*calls)
    assert len(answers) == 40
    assert all(r.error is None for r in answers.values())
    # Each answer is its own call's: the JSON-RPC id matches the request it answers.
    assert all(str(r.id) == key for key, r in answers.items())
    assert channel.requests_sent >= sent_before + 40
    assert lane.routed == []
    await lane.lane.close()


async def test_calls_past_the_workers_free_slots_go_to_the_router(bus: BusClient) -> None:
    lane = _Lane(bus.bus)
    await lane.ready()
    calls = [nap(1.0) for _ in range(SLOTS + 2)]
    routed = lane.lane.take(calls)
    # The lane keeps within the worker's capacity as it sees it; the rest are the router's.
    assert [f.envelope.request_id for f in routed] == [c.envelope.request_id for c in calls[2:]]
    await wait_until(lambda: len(lane.answered(*calls[:2])) == 2, timeout_s=60)
    await lane.lane.close()


async def test_calls_past_the_free_slots_wait_in_the_lane_and_count_in_the_pools_lag(
    bus: BusClient,
) -> None:
    lane = _Lane(bus.bus, holds=True)
    await lane.ready()
    router = get_actor(actor_names.router(bus.bus))
    calls = [nap(1.0) for _ in range(SLOTS + 3)]
    assert lane.lane.take(calls) == []  # none for the router
    # The router hears of the three waiting in the lane: the autoscaler sees them.
    await wait_until(lambda: ray.get(router.lag.remote())["kit"]["queued"] == 3, timeout_s=30)
    await wait_until(lambda: len(lane.answered(*calls)) == len(calls), timeout_s=60)
    assert all(r.error is None for r in lane.answered(*calls).values())
    assert lane.routed == []
    await wait_until(lambda: ray.get(router.lag.remote())["kit"]["queued"] == 0, timeout_s=30)
    await lane.lane.close()


async def test_a_full_worker_bounces_direct_calls_to_the_router(bus: BusClient) -> None:
    first, second = _Lane(bus.bus), _Lane(bus.bus)
    await first.ready()
    await second.ready()
    held = [nap(2.0) for _ in range(SLOTS)]
    assert first.lane.take(held) == []
    worker = get_actor((await _workers(bus))[0])
    await wait_until(lambda: ray.get(worker.status.remote())["in_flight"] == SLOTS, timeout_s=30)
    bounced = nap(0.0)
    assert second.lane.take([bounced]) == []  # this lane does not know the worker is full
    await wait_until(lambda: len(second.routed) == 1, timeout_s=30)
    assert second.routed[0].envelope.request_id == bounced.envelope.request_id
    await wait_until(lambda: len(first.answered(*held)) == SLOTS, timeout_s=60)
    await first.lane.close()
    await second.lane.close()


@pytest.mark.parametrize("sockets", [True, False], ids=["socket", "ray-call"])
async def test_a_worker_lost_with_a_direct_call_fails_it_as_may_have_run_at_once(
    bus: BusClient, sockets: bool
) -> None:
    # A worker killed by the other variant is listed until discovery drops it.
    await wait_until(lambda: _serving(bus) and _listed_once(bus), timeout_s=120)
    lane = _Lane(bus.bus, sockets=sockets)
    await lane.ready()
    worker_name = (await _workers(bus))[0]
    worker = get_actor(worker_name)
    call = nap(120.0)
    assert lane.lane.take([call]) == []
    await wait_until(lambda: ray.get(worker.status.remote())["in_flight"] >= 1, timeout_s=30)
    ray.kill(worker, no_restart=True)
    # Well before the call's 120 s: the return that would carry it failed.
    await wait_until(lambda: bool(lane.answered(call)), timeout_s=30)
    error = lane.answered(call)[call.envelope.request_id].error
    assert error is not None
    assert error.code == BusErrorCode.OUTCOME_UNKNOWN
    await lane.lane.close()
    # The supervisor replaces it; the bus client's own calls are served again.
    await wait_until(lambda: _replaced(bus, worker_name), timeout_s=120)
    result = await bus.call_tool("echo", {"text": "again"}, timeout_s=60)
    assert result.structured_content == {"result": "again"}


async def test_a_caller_giving_up_on_a_direct_call_cancels_it_on_the_worker(
    bus: BusClient,
) -> None:
    await wait_until(lambda: _serving(bus), timeout_s=120)
    for _ in range(3):  # the client's own lane reads membership after its first calls
        await bus.call_tool("echo", {"text": "x"})
    worker = get_actor((await _workers(bus))[0])
    call = asyncio.ensure_future(bus.call_tool("nap", {"seconds": 60.0}))
    await wait_until(lambda: ray.get(worker.status.remote())["in_flight"] == 1, timeout_s=30)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # Well before the call's 60 s: the cancellation reached the worker running it.
    await wait_until(lambda: ray.get(worker.status.remote())["in_flight"] == 0, timeout_s=30)


async def _workers(bus: BusClient) -> list[str]:
    supervisor = get_actor(actor_names.supervisor(bus.bus))
    names: list[str] = (await supervisor.workers.remote())["kit"]
    return names


def _replaced(bus: BusClient, gone: str) -> bool:
    supervisor = get_actor(actor_names.supervisor(bus.bus))
    names = ray.get(supervisor.workers.remote())["kit"]
    return bool(names) and gone not in names and _serving(bus)


def _has_answer(lane: _Lane, call: Frame) -> bool:
    return bool(lane.answered(call))


def _listed_once(bus: BusClient) -> bool:
    """Discovery lists one worker of the pool: the one the supervisor has."""
    membership = ray.get(get_actor(actor_names.discovery(bus.bus)).snapshot_since.remote("", -1))
    supervisor = get_actor(actor_names.supervisor(bus.bus))
    live = ray.get(supervisor.workers.remote())["kit"]
    listed = [info.actor_name for info in membership.workers.get("kit", ())]
    return len(listed) == 1 and listed == live


def _serving(bus: BusClient) -> bool:
    lag = ray.get(get_actor(actor_names.router(bus.bus)).lag.remote())
    return "kit" in lag and lag["kit"]["workers"] == 1
