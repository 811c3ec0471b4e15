"""BatchingTransport: flush on size or time, order, per-message outcomes, unpacking."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.transports.wrappers.fakes import FakeSleep, ScriptedTransport
from transports.base import Delivery, Transport
from transports.envelope import Envelope
from transports.errors import BusError, ConnectionClosed, MessageTooLarge, ParseError
from transports.memory import MemoryTransport
from transports.message import Notification, TransportMessage
from transports.wrappers.batching import BatchingTransport

BOUND_S = 60.0


async def bounded(awaitable: Awaitable[Any]) -> Any:
    async with asyncio.timeout(BOUND_S):
        return await awaitable


async def let_others_run() -> None:
    for _ in range(20):  # a few loop turns: lets ready tasks advance, waits for nothing
        await asyncio.sleep(0)


def numbered(i: int) -> Notification:
    return Notification(method="n", params={"i": i})


def batch_items(message: TransportMessage) -> list[dict[str, Any]]:
    assert isinstance(message, Notification)
    assert message.method == "rpc.raybus.batch"
    assert isinstance(message.params, dict)
    items: list[dict[str, Any]] = message.params["items"]
    return items


async def test_a_batch_below_the_size_bound_leaves_when_its_linger_ends() -> None:
    raw_a, raw_b = MemoryTransport.pair()
    sleep = FakeSleep()
    sender = BatchingTransport(raw_a, max_batch_messages=100, linger_s=0.25, sleep=sleep)
    sends = [asyncio.create_task(sender.send(numbered(i))) for i in range(5)]
    await bounded(sleep.started.wait())
    await let_others_run()
    assert sleep.requested == [0.25]
    assert not any(send.done() for send in sends)  # held for the linger, not sent
    sleep.release()
    await bounded(asyncio.gather(*sends))
    delivery = await bounded(raw_b.receive())
    assert [item["m"] for item in batch_items(delivery.message)] == [
        f'{{"jsonrpc":"2.0","method":"n","params":{{"i":{i}}}}}' for i in range(5)
    ]


async def test_a_full_batch_leaves_without_waiting_for_the_linger() -> None:
    raw_a, raw_b = MemoryTransport.pair()
    sleep = FakeSleep()  # never released: only the size bound can send
    sender = BatchingTransport(raw_a, max_batch_messages=3, linger_s=3600, sleep=sleep)
    await bounded(asyncio.gather(*(sender.send(numbered(i)) for i in range(3))))
    delivery = await bounded(raw_b.receive())
    assert len(batch_items(delivery.message)) == 3
    assert sleep.requested == []


async def test_a_byte_bound_splits_batches_and_keeps_order() -> None:
    raw_a, raw_b = MemoryTransport.pair()
    sender = BatchingTransport(raw_a, max_batch_bytes=400, max_batch_messages=1000)
    receiver = BatchingTransport(raw_b)
    padded = [Notification(method="n", params={"i": i, "pad": "p" * 60}) for i in range(30)]
    await bounded(asyncio.gather(*(sender.send(message) for message in padded)))
    received = [(await bounded(receiver.receive())).message for _ in padded]
    assert received == padded
    assert raw_b._inbound._frames == type(raw_b._inbound._frames)()  # all read


async def test_close_sends_what_is_queued_at_once() -> None:
    raw_a, raw_b = MemoryTransport.pair()
    sender = BatchingTransport(raw_a, linger_s=3600, sleep=FakeSleep())
    sends = [asyncio.create_task(sender.send(numbered(i))) for i in range(4)]
    await let_others_run()
    await bounded(sender.close())
    await bounded(asyncio.gather(*sends))
    assert len(batch_items((await bounded(raw_b.receive())).message)) == 4


async def test_a_sender_cancelled_before_its_batch_leaves_is_left_out() -> None:
    raw_a, raw_b = MemoryTransport.pair()
    sleep = FakeSleep()
    sender = BatchingTransport(raw_a, linger_s=1.0, sleep=sleep)
    sends = [asyncio.create_task(sender.send(numbered(i))) for i in range(3)]
    await bounded(sleep.started.wait())
    sends[1].cancel()
    sleep.release()
    await bounded(asyncio.gather(sends[0], sends[2]))
    items = batch_items((await bounded(raw_b.receive())).message)
    assert [item["m"].count('"i":1') for item in items] == [0, 0]
    assert len(items) == 2


def failing_for(
    predicate: Callable[[TransportMessage, Envelope | None], bool], error: BusError
) -> ScriptedTransport:
    return ScriptedTransport(fail=lambda m, e: error if predicate(m, e) else None)


def mentions_poison(message: TransportMessage, envelope: Envelope | None) -> bool:
    return "poison" in str(message.to_json_dict())


async def test_a_batch_refused_as_too_large_is_split_and_only_the_culprit_fails() -> None:
    inner = failing_for(mentions_poison, MessageTooLarge(10**6, 10**5))
    sender = BatchingTransport(inner, max_batch_messages=8, linger_s=3600, sleep=FakeSleep())
    messages = [numbered(i) for i in range(8)]
    messages[5] = Notification(method="poison")
    outcomes = await bounded(
        asyncio.gather(*(sender.send(m) for m in messages), return_exceptions=True)
    )
    assert [type(o) for o in outcomes] == [type(None)] * 5 + [MessageTooLarge] + [type(None)] * 2
    delivered: list[Any] = []
    for message, _ in inner.sent:
        if isinstance(message, Notification) and message.method == "rpc.raybus.batch":
            delivered.extend(item["m"] for item in batch_items(message))
        else:
            delivered.append(message.to_json_dict())
    assert len(delivered) == 7  # in send order, the poison left out
    assert '"i":4' in delivered[4] if isinstance(delivered[4], str) else delivered[4]["params"]


async def test_each_sender_learns_the_outcome_of_its_own_message() -> None:
    broken = Envelope(client_id="c", request_id="r1", reply_to="unreachable")
    healthy = Envelope(client_id="c", request_id="r2", reply_to="fine")
    inner = failing_for(
        lambda m, e: e is not None and e.reply_to == "unreachable",
        BusError("destination refused"),
    )
    sender = BatchingTransport(inner, linger_s=0.001)
    outcomes = await bounded(
        asyncio.gather(
            *(sender.send(numbered(i), broken if i % 2 else healthy) for i in range(10)),
            return_exceptions=True,
        )
    )
    assert [isinstance(o, BusError) for o in outcomes] == [i % 2 == 1 for i in range(10)]
    assert all(envelope == healthy for _, envelope in inner.sent)


async def test_envelopes_travel_per_message_and_routes_never_share_a_batch() -> None:
    raw_a, raw_b = MemoryTransport.pair()
    sender = BatchingTransport(raw_a, linger_s=0.01)
    receiver = BatchingTransport(raw_b)
    envelopes = [
        Envelope(client_id="c", request_id=f"r{i % 3}", reply_to="replies", deadline_unix_s=1e9)
        for i in range(9)
    ]
    await bounded(asyncio.gather(*(sender.send(numbered(i), envelopes[i]) for i in range(9))))
    received = [await bounded(receiver.receive()) for _ in range(9)]
    by_request: dict[str, list[int]] = {}
    for delivery in received:
        assert delivery.envelope is not None
        params = delivery.message.to_json_dict()["params"]
        assert delivery.envelope == envelopes[params["i"]]
        by_request.setdefault(delivery.envelope.request_id, []).append(params["i"])
    assert by_request == {"r0": [0, 3, 6], "r1": [1, 4, 7], "r2": [2, 5, 8]}


async def test_a_peer_without_batching_is_understood_both_ways() -> None:
    raw_a, raw_b = MemoryTransport.pair()
    batching = BatchingTransport(raw_b)
    await raw_a.send(numbered(1))
    assert (await bounded(batching.receive())).message == numbered(1)
    await batching.send(numbered(2))  # a lone message travels unbatched
    assert (await bounded(raw_a.receive())).message == numbered(2)


class Settlements:
    def __init__(self) -> None:
        self.acks = 0
        self.nacks = 0

    async def ack(self) -> None:
        self.acks += 1

    async def nack(self) -> None:
        self.nacks += 1


def batch_delivery(texts: list[str], settlements: Settlements) -> Delivery:
    frame = Notification(
        method="rpc.raybus.batch", params={"v": 1, "items": [{"m": t, "e": None} for t in texts]}
    )
    return Delivery(frame, None, 0, settlements.ack, settlements.nack)


async def receive_all(transport: Transport, count: int) -> list[Delivery]:
    return [await bounded(transport.receive()) for _ in range(count)]


async def test_the_batch_is_acked_once_every_message_of_it_is_acked() -> None:
    inner, settlements = ScriptedTransport(), Settlements()
    text = '{"jsonrpc":"2.0","method":"n"}'
    inner.inbox.put_nowait(batch_delivery([text] * 3, settlements))
    deliveries = await receive_all(BatchingTransport(inner), 3)
    await deliveries[0].ack()
    await deliveries[0].ack()  # a second ack of one message counts once
    await deliveries[2].ack()
    assert settlements.acks == 0
    await deliveries[1].ack()
    assert (settlements.acks, settlements.nacks) == (1, 0)


async def test_one_nacked_message_has_the_whole_batch_redelivered() -> None:
    inner, settlements = ScriptedTransport(), Settlements()
    text = '{"jsonrpc":"2.0","method":"n"}'
    inner.inbox.put_nowait(batch_delivery([text] * 2, settlements))
    first, second = await receive_all(BatchingTransport(inner), 2)
    await first.nack()
    await second.ack()
    assert (settlements.acks, settlements.nacks) == (0, 1)


async def test_an_item_that_does_not_decode_fails_alone() -> None:
    inner, settlements = ScriptedTransport(), Settlements()
    good = '{"jsonrpc":"2.0","method":"good"}'
    inner.inbox.put_nowait(batch_delivery([good, "{bad", good], settlements))
    receiver = BatchingTransport(inner)
    first = await bounded(receiver.receive())
    with pytest.raises(ParseError):
        await bounded(receiver.receive())
    third = await bounded(receiver.receive())
    assert first.message == third.message == Notification(method="good")
    await first.ack()
    await third.ack()
    assert settlements.acks == 1  # the bad item counted as settled


@pytest.mark.parametrize(
    "params",
    [{"v": 1, "items": []}, {"v": 1, "items": "x"}, {"v": 1, "items": [{"m": 1}]}],
)
async def test_a_malformed_batch_frame_is_refused_and_the_transport_keeps_working(
    params: dict[str, Any],
) -> None:
    raw_a, raw_b = MemoryTransport.pair()
    receiver = BatchingTransport(raw_b)
    await raw_a.send(Notification(method="rpc.raybus.batch", params=params))
    with pytest.raises(BusError, match=r"rpc\.raybus\.batch"):
        await bounded(receiver.receive())
    await raw_a.send(numbered(7))
    assert (await bounded(receiver.receive())).message == numbered(7)


class HangingTransport(ScriptedTransport):
    """A send that never completes (a broker that accepted the connection and went mute)."""

    async def send(self, message: TransportMessage, envelope: Envelope | None = None) -> None:
        await asyncio.Event().wait()


async def test_close_gives_up_on_a_hung_send_and_its_senders_learn_it() -> None:
    sender = BatchingTransport(HangingTransport(), close_timeout_s=0.01)
    sends = [asyncio.create_task(sender.send(numbered(i))) for i in range(3)]
    await let_others_run()
    await bounded(sender.close())
    outcomes = await bounded(asyncio.gather(*sends, return_exceptions=True))
    assert [type(outcome) for outcome in outcomes] == [ConnectionClosed] * 3


async def test_an_unexpected_inner_error_reaches_the_senders_instead_of_hanging_them() -> None:
    def bug(message: TransportMessage, envelope: Envelope | None) -> BusError | None:
        raise RuntimeError("inner transport bug")

    sender = BatchingTransport(ScriptedTransport(fail=bug), linger_s=0.001)
    outcomes = await bounded(
        asyncio.gather(*(sender.send(numbered(i)) for i in range(3)), return_exceptions=True)
    )
    assert [str(outcome) for outcome in outcomes] == ["inner transport bug"] * 3


def test_bad_settings_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="max_batch_messages"):
        BatchingTransport(ScriptedTransport(), max_batch_messages=0)
    with pytest.raises(ValueError, match="max_batch_bytes"):
        BatchingTransport(ScriptedTransport(), max_batch_bytes=10)
    with pytest.raises(ValueError, match="linger_s"):
        BatchingTransport(ScriptedTransport(), linger_s=-1)
