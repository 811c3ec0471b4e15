"""The transport contract: every transport passes the same suite.

A transport plugs in with one factory in ``tests/transports/pairs.py``; its declared
capabilities decide which assertions apply.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import pytest

from tests.transports.pairs import CONTRACT_LIMITS, PAIR_FACTORIES, TransportPair
from transports.envelope import Envelope
from transports.errors import (
    ConnectionClosed,
    EnvelopeNotSupported,
    InvalidRequest,
    MessageTooLarge,
    ParseError,
)
from transports.message import Notification, Request, Response, TransportMessage

T = TypeVar("T")
# Bounds stop a hung test; they are not speed assertions. Sized for a cold, loaded 2-core
# machine and for the slowest backend under test (a broker, or moto's SQS server).
BOUND_S = 60.0
# Whole-test bound for the many-message tests. moto's receive scans every message still
# in the queue (three times over for each one it returns), and the contract never acks,
# so its cost grows with depth: 640 messages took 11 s on an idle 2-core machine and
# more than the old 20 s bound on a loaded one.
BULK_BOUND_S = 300.0


async def within(awaitable: Awaitable[T], timeout_s: float = BOUND_S) -> T:
    async with asyncio.timeout(timeout_s):
        return await awaitable


@pytest.fixture(params=sorted(PAIR_FACTORIES))
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[TransportPair]:
    async with PAIR_FACTORIES[request.param]() as connected:
        yield connected


async def receive_message(pair_end: TransportPair, side: str = "b") -> TransportMessage:
    end = pair_end.b if side == "b" else pair_end.a
    delivery = await within(end.receive())
    return delivery.message


async def test_all_three_message_kinds_round_trip_both_ways(pair: TransportPair) -> None:
    sent: list[TransportMessage] = [
        Request(id=1, method="tools/call", params={"name": "add", "arguments": {"a": 1}}),
        Notification(method="notifications/progress", params={"progress": 0.5}),
        Response.success("x", {"content": [{"type": "text", "text": "ünïcode ✓"}]}),
        Response.failure(2, -32601, "Method not found"),
    ]
    for message in sent:
        await within(pair.a.send(message))
        assert await receive_message(pair) == message
        await within(pair.b.send(message))
        assert await receive_message(pair, side="a") == message


async def test_envelopes_travel_beside_the_body_or_are_refused(pair: TransportPair) -> None:
    envelope = Envelope(client_id="c1", request_id="r1", principal="alice")
    message = Request(id=1, method="ping")
    if pair.a.capabilities.carries_envelope:
        await within(pair.a.send(message, envelope))
        delivery = await within(pair.b.receive())
        assert delivery.envelope == envelope
        assert delivery.message == message
    else:
        with pytest.raises(EnvelopeNotSupported):
            await pair.a.send(message, envelope)
        await within(pair.a.send(message))
        assert await receive_message(pair) == message


async def test_messages_from_one_sender_arrive_in_order(pair: TransportPair) -> None:
    if not pair.a.capabilities.ordered:
        pytest.skip("transport does not promise order")
    count = 300

    async def send_all() -> None:
        for i in range(count):
            await pair.a.send(Notification(method="seq", params={"i": i}))

    sender = asyncio.create_task(send_all())
    received = [await receive_message(pair) for _ in range(count)]
    await within(sender)
    assert [m.params for m in received if isinstance(m, Notification)] == [
        {"i": i} for i in range(count)
    ]


async def test_concurrent_senders_and_receivers_lose_and_mangle_nothing(
    pair: TransportPair,
) -> None:
    senders, per_sender = 8, 40
    padding = "p" * 2000  # large enough that frames span several socket writes

    async def send_from(sender: int, end: TransportPair, side: str) -> None:
        transport = end.a if side == "a" else end.b
        for i in range(per_sender):
            await transport.send(
                Request(id=f"{side}-{sender}-{i}", method="m", params={"pad": padding})
            )

    async def receive_n(side: str, n: int) -> list[TransportMessage]:
        return [await receive_message(pair, side) for _ in range(n)]

    total = senders * per_sender
    tasks = [asyncio.create_task(send_from(s, pair, side)) for s in range(senders) for side in "ab"]
    at_b, at_a = await within(
        asyncio.gather(receive_n("b", total), receive_n("a", total)), BULK_BOUND_S
    )
    await within(asyncio.gather(*tasks))
    for side, received in (("a", at_b), ("b", at_a)):
        ids = [m.id for m in received if isinstance(m, Request)]
        assert sorted(map(str, ids)) == sorted(
            f"{side}-{s}-{i}" for s in range(senders) for i in range(per_sender)
        )
        assert all(isinstance(m, Request) and m.params == {"pad": padding} for m in received)
        if pair.a.capabilities.ordered:
            for s in range(senders):
                mine = [str(i) for i in ids if str(i).startswith(f"{side}-{s}-")]
                assert mine == [f"{side}-{s}-{i}" for i in range(per_sender)]


async def test_send_after_close_fails(pair: TransportPair) -> None:
    await pair.a.close()
    assert not pair.a.is_connected()
    with pytest.raises(ConnectionClosed):
        await within(pair.a.send(Notification(method="late")))


async def test_receive_after_own_close_fails(pair: TransportPair) -> None:
    await pair.b.close()
    with pytest.raises(ConnectionClosed):
        await within(pair.b.receive())


async def test_a_pending_receive_wakes_when_its_transport_closes(pair: TransportPair) -> None:
    waiting = asyncio.create_task(pair.b.receive())
    await asyncio.sleep(0)  # let the receive start waiting
    await within(pair.b.close())
    with pytest.raises(ConnectionClosed):
        await within(waiting)


async def test_receive_after_the_peer_closed_drains_then_raises(pair: TransportPair) -> None:
    await within(pair.a.send(Notification(method="last words")))
    await within(pair.a.close())
    assert await receive_message(pair) == Notification(method="last words")
    if not pair.b.capabilities.peer_close_visible:
        return  # a broker topic has no single peer: the reader waits for other producers
    with pytest.raises(ConnectionClosed):
        await within(pair.b.receive())


async def test_an_oversize_send_is_refused_and_nothing_is_sent(pair: TransportPair) -> None:
    too_big = "x" * (pair.a.capabilities.max_message_bytes + 1)
    with pytest.raises(MessageTooLarge):
        await within(pair.a.send(Notification(method="big", params={"blob": too_big})))
    await within(pair.a.send(Notification(method="after")))
    assert await receive_message(pair) == Notification(method="after")
    assert pair.a.is_connected()


async def test_an_oversize_frame_is_rejected_and_the_next_message_arrives(
    pair: TransportPair,
) -> None:
    oversize = b'{"jsonrpc":"2.0","method":"big","params":{"blob":"'
    oversize += b"x" * (CONTRACT_LIMITS.max_message_bytes + 10) + b'"}}'
    sending = asyncio.create_task(pair.inject(oversize))
    with pytest.raises(MessageTooLarge):
        await within(pair.b.receive())
    await within(sending)
    await within(pair.a.send(Notification(method="after")))
    assert await receive_message(pair) == Notification(method="after")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"{this is not json", ParseError),
        (b'{"jsonrpc":"2.0","id":1,"id":1,"method":"x"}', ParseError),
        (b'{"jsonrpc":"2.0","id":1.5,"method":"x"}', InvalidRequest),
        (b'[{"jsonrpc":"2.0","id":1,"method":"x"}]', InvalidRequest),
    ],
)
async def test_a_malformed_frame_does_not_kill_the_transport(
    pair: TransportPair, raw: bytes, error: type[Exception]
) -> None:
    await within(pair.inject(raw))
    with pytest.raises(error):
        await within(pair.b.receive())
    await within(pair.a.send(Request(id=2, method="after")))
    assert await receive_message(pair) == Request(id=2, method="after")


async def test_transports_report_type_and_capabilities(pair: TransportPair) -> None:
    assert pair.a.transport_type == pair.b.transport_type
    assert pair.a.capabilities.max_message_bytes == CONTRACT_LIMITS.max_message_bytes
    assert pair.a.is_connected()
