"""A broker client's link without Ray or a broker: an in-memory wire, fake discovery,
ledger and workers. What it must do that the router does for Ray: fail a failing pool's
calls fast, and carry cancellations to the ledger and the pool's workers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.discovery.catalog import CapabilityIndex, Catalog
from actors.discovery.registry import Membership, ServerStatus, WorkerInfo
from actors.router.breaker import BreakerConfig
from cluster.backends import broker as broker_module
from cluster.backends.broker import BrokerClientLink, request_key
from tests.waiting import wait_until
from transports.base import Delivery
from transports.envelope import CorrelationKey, Envelope
from transports.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    BusError,
    BusErrorCode,
    ConnectionClosed,
    DeliveryUnconfirmed,
    FramesNotSent,
    MessageTooLarge,
)
from transports.frame import Frame
from transports.message import Request, Response

CATALOGS = {"kit": Catalog.of(tools=[{"name": "echo"}])}
WORKERS = ("w1", "w2")


class Remote:
    """A Ray actor method as the link awaits it: ``method.remote(...)``."""

    def __init__(self, method: Any) -> None:
        self._method = method

    async def remote(self, *args: Any) -> Any:
        return self._method(*args)


class FakeDiscovery:
    def __init__(self) -> None:
        workers = tuple(
            WorkerInfo(name, "kit", name, ServerStatus.ONLINE, 0, 4, "", 0.0) for name in WORKERS
        )
        membership = Membership(
            1, {"kit": workers}, CATALOGS, CapabilityIndex.build(list(CATALOGS.items()))
        )
        self.snapshot = Remote(lambda: membership)


class FakeHandles:
    """The ledger and the workers, by actor name; each records what it was told."""

    def __init__(self) -> None:
        self.withdrawn: list[str] = []
        self.cancelled: dict[str, list[CorrelationKey]] = {name: [] for name in WORKERS}

    async def get_async(self, name: str) -> Any:
        handle = type("Handle", (), {})()
        if name in self.cancelled:
            handle.cancel = Remote(self.cancelled[name].extend)
        else:
            handle.withdraw = Remote(self.withdrawn.append)
        return handle


class FakeWire:
    """Requests sent are kept; answers are put in by the test."""

    reply_to = "replies"

    def __init__(self) -> None:
        self.sent: list[Frame] = []
        self.answers: asyncio.Queue[Delivery] = asyncio.Queue()
        self.open = True
        self.failures: dict[str, BusError] = {}  # by request id: how its send went wrong

    async def start(self) -> None:
        return None

    def destination_for_pool(self, pool: str) -> str:
        return pool

    async def send(self, destination: str, frames: list[Frame]) -> list[tuple[Frame, BusError]]:
        self.sent.extend(frames)
        return [
            (frame, self.failures[frame.envelope.request_id])
            for frame in frames
            if frame.envelope.request_id in self.failures
        ]

    async def next_delivery(self) -> Delivery:
        if not self.open:
            raise ConnectionClosed("closed")
        return await self.answers.get()

    def is_connected(self) -> bool:
        return self.open

    async def close(self) -> None:
        self.open = False


def call(number: int) -> Frame:
    envelope = Envelope(
        client_id="c", request_id=str(number), method="tools/call", name="echo", reply_to="replies"
    ).with_deadline_in(60)
    return Frame.of(envelope, Request(id=number, method="tools/call", params={"name": "echo"}))


def answer(frame: Frame, response: Response) -> Delivery:
    return Delivery(response, frame.envelope)


async def link_with(
    wire: FakeWire, handles: FakeHandles, answered: list[Frame]
) -> BrokerClientLink:
    async def on_frame(frame: Frame) -> None:
        answered.append(frame)

    link = BrokerClientLink(
        wire,
        FakeDiscovery(),
        on_frame,
        bus="b",
        breaker=BreakerConfig(minimum_calls=2, failure_rate_threshold=1.0, open_cooldown_s=60),
        handles=handles,  # type: ignore[arg-type]
    )
    await link.start()
    return link


def codes(frames: list[Frame]) -> list[int | None]:
    out: list[int | None] = []
    for frame in frames:
        response = frame.decode()
        assert isinstance(response, Response)
        out.append(response.error.code if response.error is not None else None)
    return out


async def test_pool_faults_seen_in_answers_make_later_calls_fail_fast_without_being_sent() -> None:
    wire, handles = FakeWire(), FakeHandles()
    answered: list[Frame] = []
    link = await link_with(wire, handles, answered)
    receiving = asyncio.ensure_future(link.receive())
    await link.submit([call(1), call(2)])
    for frame in wire.sent:
        request = frame.decode()
        assert isinstance(request, Request)
        wire.answers.put_nowait(answer(frame, Response.failure(request.id, INTERNAL_ERROR, "x")))
    async with asyncio.timeout(5):
        while len(answered) < 2:  # noqa: ASYNC110 - the receive loop's progress
            await asyncio.sleep(0)
    await link.submit([call(3), call(4)])
    assert [f.envelope.request_id for f in wire.sent] == ["1", "2"]  # 3 and 4 never left
    assert codes(answered) == [INTERNAL_ERROR] * 2 + [BusErrorCode.CIRCUIT_OPEN] * 2
    receiving.cancel()
    await link.close()


async def test_a_cancel_withdraws_the_call_in_the_ledger_and_tells_every_worker_of_its_pool() -> (
    None
):
    wire, handles = FakeWire(), FakeHandles()
    answered: list[Frame] = []
    link = await link_with(wire, handles, answered)
    await link.submit([call(1), call(2)])
    key = call(1).envelope.correlation_key
    # A key this link never sent: an earlier link of the same client may have (a task
    # store Ray restarted), so it goes to the ledger and to every pool's workers too.
    earlier: CorrelationKey = ("replies", "c", "99")
    link.cancel([key, earlier])
    await link.close()  # waits (bounded) for what the cancellations tell
    # Closing cancels what was still in flight (call 2): a client gone leaves nothing running.
    other = call(2).envelope.correlation_key
    told = [key, earlier, other]
    assert sorted(handles.withdrawn) == sorted(request_key(k) for k in told)
    for worker in WORKERS:
        assert sorted(handles.cancelled[worker]) == sorted(told)
    assert link.calls.in_flight() == []


class GatedHandles(FakeHandles):
    """Workers where the first cancel to arrive is held until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.first_cancel_arrived = asyncio.Event()
        self.release_first_cancel = asyncio.Event()

    async def get_async(self, name: str) -> Any:
        handle = await super().get_async(name)
        if name in self.cancelled:
            told = self.cancelled[name]
            arrived, release = self.first_cancel_arrived, self.release_first_cancel

            async def cancel(keys: list[CorrelationKey]) -> None:
                if not arrived.is_set():  # the first cancel to reach any worker
                    arrived.set()
                    await release.wait()
                told.extend(keys)

            handle.cancel = type("GatedCancel", (), {"remote": staticmethod(cancel)})()
        return handle


async def test_cancels_reach_the_workers_in_the_order_the_client_made_them() -> None:
    """A queued call cancelled before a running one must be withdrawn on the worker
    before the running one's slot frees; else the queued call takes the slot and runs."""
    wire, handles = FakeWire(), GatedHandles()
    link = await link_with(wire, handles, [])
    await link.submit([call(1), call(2)])
    queued, running = (call(n).envelope.correlation_key for n in (1, 2))
    link.cancel([queued])
    async with asyncio.timeout(5):
        await handles.first_cancel_arrived.wait()
    link.cancel([running])
    for _ in range(20):  # room for an out-of-order second cancel to overtake the first
        await asyncio.sleep(0)
    assert all(running not in told for told in handles.cancelled.values())
    handles.release_first_cancel.set()
    await link.close()
    for worker in WORKERS:
        assert handles.cancelled[worker] == [queued, running]


async def test_a_cancel_batch_past_its_bound_still_arrives_while_later_ones_go_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bound frees later cancels from a slow batch; it must not drop the slow one
    (cancelling it there would leave its call running to its end)."""
    monkeypatch.setattr(broker_module, "_CANCEL_BATCH_S", 0.05)
    wire, handles = FakeWire(), GatedHandles()
    link = await link_with(wire, handles, [])
    await link.submit([call(1), call(2)])
    slow, later = (call(n).envelope.correlation_key for n in (1, 2))
    link.cancel([slow])
    async with asyncio.timeout(5):
        await handles.first_cancel_arrived.wait()
    link.cancel([later])
    await wait_until(lambda: all(later in handles.cancelled[w] for w in WORKERS), 5)
    handles.release_first_cancel.set()
    await wait_until(lambda: all(slow in handles.cancelled[w] for w in WORKERS), 5)
    await link.close()


async def test_a_partly_failed_batch_tells_each_caller_the_truth_about_its_own_request() -> None:
    """A broker batch is not all-or-nothing: a request the broker never confirmed may
    still run ("may have run", 1004), one never handed over did not ("not sent"), one too
    large was refused, and the others were sent and stay pending for their answers."""
    wire, handles = FakeWire(), FakeHandles()
    wire.failures = {
        "2": DeliveryUnconfirmed("kafka did not confirm"),
        "3": MessageTooLarge(10, 5),
        "4": ConnectionClosed("broker unreachable"),
    }
    answered: list[Frame] = []
    link = await link_with(wire, handles, answered)
    with pytest.raises(FramesNotSent) as raised:
        await link.submit([call(1), call(2), call(3), call(4)])
    assert raised.value.keys == {call(4).envelope.correlation_key}
    assert "broker unreachable" in str(raised.value)
    by_id = {
        frame.envelope.request_id: code
        for frame, code in zip(answered, codes(answered), strict=True)
    }
    assert by_id == {"2": BusErrorCode.OUTCOME_UNKNOWN, "3": INVALID_REQUEST}
    await link.close()
