import asyncio

import pytest

from tests.transports.test_contract import within
from transports.errors import ConnectionClosed
from transports.memory import MemoryTransport
from transports.message import Notification


async def test_a_full_queue_makes_send_wait_until_the_peer_receives() -> None:
    a, b = MemoryTransport.pair(max_queued=2)
    await within(a.send(Notification(method="1")))
    await within(a.send(Notification(method="2")))
    third = asyncio.create_task(a.send(Notification(method="3")))
    done, _ = await asyncio.wait({third}, timeout=0.05)
    assert not done  # blocked: the queue holds two
    assert (await within(b.receive())).message == Notification(method="1")
    await within(third)
    assert [(await within(b.receive())).message for _ in range(2)] == [
        Notification(method="2"),
        Notification(method="3"),
    ]


async def test_a_sender_blocked_on_a_full_queue_fails_when_the_peer_closes() -> None:
    a, b = MemoryTransport.pair(max_queued=1)
    await within(a.send(Notification(method="1")))
    blocked = asyncio.create_task(a.send(Notification(method="2")))
    done, _ = await asyncio.wait({blocked}, timeout=0.05)
    assert not done
    await within(b.close())
    with pytest.raises(ConnectionClosed):
        await within(blocked)


def test_a_pair_needs_room_for_at_least_one_message() -> None:
    with pytest.raises(ValueError):
        MemoryTransport.pair(max_queued=0)
