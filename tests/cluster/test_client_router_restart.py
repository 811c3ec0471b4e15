"""The client's side of a router restart, on a fake link (no Ray).

A Ray router answers each batch with its incarnation; when a batch is taken by a new
incarnation, the calls the previous one had accepted and not answered are failed at
once with 1004 ("may have run") instead of waiting for their deadline and the grace.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cluster import client_connection
from cluster.backends.ray import RouterTook
from cluster.client import BusClient, CallError
from cluster.client_connection import ClientConnection
from tests.waiting import wait_until
from transports.envelope import CorrelationKey
from transports.errors import BusErrorCode, ConnectionClosed
from transports.frame import Frame


class FakeRouterLink:
    """Accepts every batch at once, answering with the router's current incarnation."""

    reply_to = "fake-client"

    def __init__(self) -> None:
        self.incarnation: object = "first"
        self.batches: list[list[Frame]] = []

    def submit(self, frames: list[Frame]) -> Any:
        self.batches.append(frames)
        accepted: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        accepted.set_result(self.incarnation)
        return accepted

    def cancel(self, keys: list[CorrelationKey]) -> None:
        pass

    async def receive(self) -> None:
        await asyncio.Event().wait()  # answers never come: only the restart ends calls

    async def close(self) -> None:
        pass


async def connected(link: FakeRouterLink) -> tuple[ClientConnection, BusClient]:
    connection = ClientConnection("fake", discovery=None)
    connection.attach(link)
    return connection, BusClient(connection, "c1", "anonymous")


async def accepted(connection: ClientConnection, link: FakeRouterLink, batches: int) -> None:
    await wait_until(lambda: len(link.batches) >= batches, timeout_s=10)
    await wait_until(lambda: all(p.router is not None for p in connection.pending.values()))


async def test_calls_held_by_a_router_that_restarted_end_at_once_as_may_have_run() -> None:
    link = FakeRouterLink()
    connection, client = await connected(link)
    held = [asyncio.create_task(client.call_tool("echo", {"text": str(i)})) for i in range(3)]
    await accepted(connection, link, 1)
    link.incarnation = "second"
    later = asyncio.create_task(client.call_tool("echo", {"text": "later"}))
    for call in held:
        with pytest.raises(CallError) as failed:
            async with asyncio.timeout(10):
                await call
        assert failed.value.code == BusErrorCode.OUTCOME_UNKNOWN
        assert "restarted" in failed.value.message
    await accepted(connection, link, 2)
    assert not later.done()  # taken by the live router: it waits for its answer
    await client.close()
    with pytest.raises(ConnectionClosed):
        await later


async def test_batches_taken_by_the_same_router_or_by_a_broker_fail_nothing() -> None:
    link = FakeRouterLink()
    connection, client = await connected(link)
    first = asyncio.create_task(client.call_tool("echo", {"text": "a"}))
    await accepted(connection, link, 1)
    second = asyncio.create_task(client.call_tool("echo", {"text": "b"}))
    await accepted(connection, link, 2)
    link.incarnation = None  # a broker link answers nothing about a router
    third = asyncio.create_task(client.call_tool("echo", {"text": "c"}))
    await wait_until(lambda: len(link.batches) >= 3, timeout_s=10)
    await asyncio.sleep(0)  # let the third batch's acceptance run
    assert [call.done() for call in (first, second, third)] == [False, False, False]
    await client.close()
    for call in (first, second, third):
        with pytest.raises(ConnectionClosed):
            await call


class PartlyDirectLink(FakeRouterLink):
    """The router takes every other call; the others went to workers directly or wait
    in the client's lane, as the Ray link's direct lane sends them."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def submit(self, frames: list[Frame]) -> Any:
        routed = [f for n, f in enumerate(frames, start=self.sent) if n % 2 == 0]
        self.sent += len(frames)
        return RouterTook(super().submit(routed), routed)


async def test_a_router_restart_fails_only_the_calls_that_router_took() -> None:
    link = PartlyDirectLink()
    connection, client = await connected(link)
    tasks = [asyncio.create_task(client.call_tool("echo", {"text": str(i)})) for i in range(4)]
    await wait_until(lambda: link.sent == 4, timeout_s=10)
    await wait_until(lambda: sum(p.router is not None for p in connection.pending.values()) == 2)
    link.incarnation = "second"
    later = asyncio.create_task(client.call_tool("echo", {"text": "later"}))
    await wait_until(lambda: sum(t.done() for t in tasks) == 2, timeout_s=10)
    await wait_until(lambda: link.sent == 5, timeout_s=10)
    await asyncio.sleep(0)  # let the last batch's acceptance run
    failed = [t for t in tasks if t.done()]
    for task in failed:
        with pytest.raises(CallError) as error:
            await task
        assert error.value.code == BusErrorCode.OUTCOME_UNKNOWN
    # The calls the router never held wait for their answers.
    assert sum(t.done() for t in tasks) == 2
    await client.close()
    for task in [*(t for t in tasks if t not in failed), later]:
        with pytest.raises(ConnectionClosed):
            await task


class AskedRouterLink(FakeRouterLink):
    """A Ray router's link also answers what the router's incarnation is now."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    async def router_incarnation(self) -> object:
        self.asked += 1
        if self.incarnation == "restarting":
            raise RuntimeError("the actor is restarting")
        return self.incarnation


async def test_a_restart_no_batch_tells_of_still_fails_the_held_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every later call on the direct lane: the router is sent nothing, so it must be asked.
    monkeypatch.setattr(client_connection, "ROUTER_CHECK_S", 0.05)
    link = AskedRouterLink()
    connection, client = await connected(link)
    held = [asyncio.create_task(client.call_tool("echo", {"text": str(i)})) for i in range(3)]
    await accepted(connection, link, 1)
    asked_before = link.asked
    link.incarnation = "restarting"  # a failed ask changes nothing
    await wait_until(lambda: link.asked >= asked_before + 2, timeout_s=10)
    assert not any(call.done() for call in held)
    link.incarnation = "second"
    for call in held:
        with pytest.raises(CallError) as failed:
            async with asyncio.timeout(10):
                await call
        assert failed.value.code == BusErrorCode.OUTCOME_UNKNOWN
    assert connection.router == "second"
    await client.close()


async def test_with_no_call_held_the_router_is_not_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_connection, "ROUTER_CHECK_S", 0.01)
    link = AskedRouterLink()
    connection, client = await connected(link)
    link.incarnation = "second"
    for _ in range(20):  # twenty periods of the watcher
        await asyncio.sleep(0.01)
    assert link.asked == 0
    await client.close()
    assert connection.router_watch is not None
    assert connection.router_watch.done()
