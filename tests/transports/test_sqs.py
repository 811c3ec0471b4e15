"""SQS-specific behaviour over a real SQS endpoint (moto server): visibility, redrive,
size caps, FIFO order and deduplication, envelopes, response queues and lag."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aioboto3
import pytest
from botocore.exceptions import ClientError

from transports.envelope import Envelope
from transports.errors import ConnectionClosed, MessageTooLarge, ParseError, TransportError
from transports.message import Notification, Request, Response
from transports.sqs.transport import (
    SQS_MAX_MESSAGE_BYTES,
    SqsConfig,
    SqsTransport,
    response_queue_name,
    translate_client_error,
)

pytestmark = pytest.mark.sqs

T = TypeVar("T")
_REGION = "us-east-1"
_DUMMY = "testing"  # moto accepts any credentials; never send real ones to it
BOUND_S = 60.0  # stops a hang; sized for a loaded 2-core machine, measures nothing

Open = Callable[..., Awaitable[SqsTransport]]


async def within(awaitable: Awaitable[T], timeout_s: float = BOUND_S) -> T:
    async with asyncio.timeout(timeout_s):
        return await awaitable


async def nothing_arrives(transport: SqsTransport, for_s: float) -> bool:
    """True when ``transport`` receives nothing for ``for_s`` seconds."""
    try:
        async with asyncio.timeout(for_s):
            await transport.receive()
    except TimeoutError:
        return True
    return False


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout_s: float = BOUND_S) -> None:
    """Poll ``condition`` until it holds; bounded."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.1)


@pytest.fixture
async def raw_sqs(sqs_endpoint: str) -> AsyncIterator[Any]:
    session = aioboto3.Session(
        aws_access_key_id=_DUMMY, aws_secret_access_key=_DUMMY, region_name=_REGION
    )
    async with session.client("sqs", endpoint_url=sqs_endpoint) as client:
        yield client


@pytest.fixture
async def open_transport(sqs_endpoint: str, unique_name: str, raw_sqs: Any) -> AsyncIterator[Open]:
    """Starts transports on queues prefixed with the test's unique name; cleans up."""
    prefix = f"{unique_name}-"
    opened: list[SqsTransport] = []

    async def open_(**overrides: Any) -> SqsTransport:
        settings: dict[str, Any] = {
            "endpoint_url": sqs_endpoint,
            "region": _REGION,
            "queue_prefix": prefix,
            "wait_time_seconds": 1,
            "aws_access_key_id": _DUMMY,
            "aws_secret_access_key": _DUMMY,
        }
        transport = SqsTransport(SqsConfig(**(settings | overrides)))
        await within(transport.start())
        opened.append(transport)
        return transport

    yield open_
    for transport in opened:
        await transport.close()
    listed = await raw_sqs.list_queues(QueueNamePrefix=prefix)
    for url in listed.get("QueueUrls", []):
        await raw_sqs.delete_queue(QueueUrl=url)


async def test_an_unacknowledged_message_reappears_after_the_visibility_timeout(
    open_transport: Open,
) -> None:
    sender = await open_transport(send_queue="q")
    receiver = await open_transport(receive_queue="q", visibility_timeout_s=1, keep_visible=False)
    await within(sender.send(Request(id=1, method="work")))

    first = await within(receiver.receive())
    second = await within(receiver.receive())

    assert first.message == second.message == Request(id=1, method="work")
    assert (first.receive_count, second.receive_count) == (1, 2)
    await second.ack()
    assert await receiver.queue_depth() == 0


async def test_a_nacked_message_is_delivered_again_at_once(open_transport: Open) -> None:
    sender = await open_transport(send_queue="q")
    receiver = await open_transport(receive_queue="q", visibility_timeout_s=60)
    await within(sender.send(Request(id=1, method="work")))

    first = await within(receiver.receive())
    await first.nack()
    second = await within(receiver.receive(), timeout_s=30)  # well under the 60 s

    assert second.message == first.message
    assert second.receive_count == 2


async def test_a_delivery_kept_visible_while_processing_is_not_delivered_twice(
    open_transport: Open,
) -> None:
    sender = await open_transport(send_queue="q")
    worker = await open_transport(receive_queue="q", visibility_timeout_s=1)
    rival = await open_transport(receive_queue="q", visibility_timeout_s=1)
    await within(sender.send(Request(id=1, method="slow tool")))
    delivery = await within(worker.receive())

    # "Processing" for three visibility timeouts; the rival consumer polls all along.
    assert await nothing_arrives(rival, for_s=3.5)
    await delivery.ack()

    assert await rival.queue_depth() == 0


async def test_an_explicit_extension_hides_a_delivery_past_its_timeout(
    open_transport: Open,
) -> None:
    sender = await open_transport(send_queue="q")
    worker = await open_transport(receive_queue="q", visibility_timeout_s=1, keep_visible=False)
    await within(sender.send(Request(id=1, method="slow tool")))
    delivery = await within(worker.receive())

    await worker.extend(delivery, 4)
    assert await nothing_arrives(worker, for_s=2.5)
    again = await within(worker.receive())

    assert again.message == delivery.message
    assert again.receive_count == 2


async def test_a_poison_message_moves_to_the_dead_letter_queue_after_max_receive_count(
    open_transport: Open, raw_sqs: Any
) -> None:
    receiver = await open_transport(
        receive_queue="q", visibility_timeout_s=1, max_receive_count=2, wait_time_seconds=1
    )
    sender = await open_transport(send_queue="q")
    url = (await raw_sqs.get_queue_url(QueueName=receiver.receive_queue_name))["QueueUrl"]
    await raw_sqs.send_message(QueueUrl=url, MessageBody="{this is not json")

    refusals = 0
    for _ in range(2):
        with pytest.raises(ParseError):
            await within(receiver.receive())
        refusals += 1
    await within(sender.send(Request(id=2, method="after")))
    assert (await within(receiver.receive())).message == Request(id=2, method="after")

    async def dead_lettered() -> bool:
        # Redrive happens on a receive attempt; the poison message must not come back.
        assert await nothing_arrives(receiver, for_s=1.0)
        return await receiver.queue_depth(dead_letter=True) == 1

    await wait_until(dead_lettered)
    assert refusals == 2
    dlq_url = (
        await raw_sqs.get_queue_url(QueueName=receiver.config.full_name("q", dead_letter=True))
    )["QueueUrl"]
    [dead] = (await raw_sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1))["Messages"]
    assert dead["Body"] == "{this is not json"


async def test_an_oversize_message_is_refused_and_never_silently_dropped(
    open_transport: Open,
) -> None:
    capped = await open_transport(send_queue="q", receive_queue="q", max_message_bytes=1000)
    full = await open_transport(send_queue="q")

    with pytest.raises(MessageTooLarge) as small_cap:
        await capped.send(Notification(method="big", params={"blob": "x" * 1000}))
    with pytest.raises(MessageTooLarge) as sqs_cap:
        await full.send(Notification(method="big", params={"blob": "x" * SQS_MAX_MESSAGE_BYTES}))
    # Attributes count toward SQS's cap: a body just under it plus an envelope is over.
    under = SQS_MAX_MESSAGE_BYTES - 200
    with pytest.raises(MessageTooLarge):
        await full.send(
            Notification(method="b", params={"blob": "x" * under}),
            Envelope(client_id="c" * 300, request_id="r"),
        )

    assert small_cap.value.max_bytes == 1000
    assert sqs_cap.value.max_bytes == SQS_MAX_MESSAGE_BYTES
    assert await capped.queue_depth() == 0


async def test_a_fifo_queue_keeps_order_per_client_and_drops_a_repeated_request(
    open_transport: Open,
) -> None:
    sender = await open_transport(send_queue="q", fifo=True)
    receiver = await open_transport(receive_queue="q", fifo=True)
    assert receiver.capabilities.ordered
    for i in range(10):
        for client in ("c1", "c2"):
            envelope = Envelope(client_id=client, request_id=f"r{i}")
            await within(sender.send(Request(id=i, method=client), envelope))
    # The same request key again (a retried send): FIFO deduplication drops it.
    await within(sender.send(Request(id=0, method="c1"), Envelope(client_id="c1", request_id="r0")))

    seen: dict[str, list[int]] = {"c1": [], "c2": []}
    for _ in range(20):
        delivery = await within(receiver.receive())
        assert isinstance(delivery.message, Request)
        assert delivery.envelope is not None
        seen[delivery.envelope.client_id].append(int(delivery.message.id))
        await delivery.ack()  # FIFO holds back a group while one of its messages is in flight

    assert seen == {"c1": list(range(10)), "c2": list(range(10))}
    assert await receiver.queue_depth() == 0


async def test_envelopes_round_trip_as_message_attributes(
    open_transport: Open, raw_sqs: Any
) -> None:
    sender = await open_transport(send_queue="q")
    receiver = await open_transport(receive_queue="q")
    envelope = Envelope(
        client_id="client-ü",
        request_id="r-1",
        principal="alice",
        reply_to="responses-x",
        deadline_unix_s=1_900_000_000.25,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="vendor=1",
        idempotency_key="k-1",
        method="tools/call",
        name="add",
        attributes=(("a", "1"), ("b", "")),
    )
    await within(sender.send(Request(id=1, method="tools/call"), envelope))
    await within(sender.send(Response.success(1, {}), None))

    first = await within(receiver.receive())
    second = await within(receiver.receive())

    by_kind = {type(d.message): d for d in (first, second)}
    assert by_kind[Request].envelope == envelope
    assert by_kind[Response].envelope is None


async def test_a_worker_answers_into_per_client_response_queues(
    open_transport: Open,
) -> None:
    worker = await open_transport(receive_queue="requests")
    client = await open_transport(
        send_queue="requests",
        receive_queue=response_queue_name("client/1 with spaces"),
        delete_receive_queue_on_close=True,
    )
    reply_to = client.receive_queue_name
    assert reply_to is not None
    await within(
        client.send(Request(id=7, method="ping"), Envelope(client_id="c", reply_to=reply_to))
    )

    request = await within(worker.receive())
    assert request.envelope is not None
    await within(worker.send(Response.success(7, {}), request.envelope))
    await request.ack()
    answer = await within(client.receive())
    await answer.ack()
    await client.close()

    assert answer.message == Response.success(7, {})
    with pytest.raises(ConnectionClosed):
        await worker.send(Response.success(8, {}), request.envelope)


async def test_a_worker_request_reaches_the_caller_while_naming_the_worker_as_reply_to(
    open_transport: Open,
) -> None:
    # Sampling mid-call: the request goes to the caller's queue, its envelope tells the
    # caller where to answer (the worker), so the envelope is not the address.
    worker = await open_transport(receive_queue="requests")
    client = await open_transport(receive_queue=response_queue_name("caller"))
    caller_queue = client.receive_queue_name
    assert caller_queue is not None
    sampling = Request(id="w1#1", method="sampling/createMessage", params={"messages": []})
    envelope = Envelope(client_id="caller", request_id="1", reply_to="worker-actor-w1")

    await within(worker.send_to(caller_queue, sampling, envelope))
    delivery = await within(client.receive())
    await delivery.ack()

    assert delivery.message == sampling
    assert delivery.envelope is not None
    assert delivery.envelope.reply_to == "worker-actor-w1"


async def test_queue_depth_counts_visible_and_in_flight_messages(open_transport: Open) -> None:
    sender = await open_transport(send_queue="q")
    receiver = await open_transport(receive_queue="q", max_number_of_messages=1)
    for i in range(3):
        await within(sender.send(Notification(method="n", params={"i": i})))

    delivery = await within(receiver.receive())
    assert await receiver.queue_depth() == 3  # 2 visible + 1 in flight
    await delivery.ack()
    assert await receiver.queue_depth() == 2


async def test_closing_releases_buffered_messages_for_other_consumers(
    open_transport: Open,
) -> None:
    sender = await open_transport(send_queue="q")
    greedy = await open_transport(receive_queue="q", visibility_timeout_s=60)
    other = await open_transport(receive_queue="q", visibility_timeout_s=60)
    for i in range(5):
        await within(sender.send(Notification(method="n", params={"i": i})))
    # One batch takes all five; the four not yet handed out would stay hidden for 60 s.
    taken = await within(greedy.receive())
    await greedy.close()

    rest = [await within(other.receive(), timeout_s=30) for _ in range(4)]  # < 60 s

    params = [d.message.params for d in (taken, *rest) if isinstance(d.message, Notification)]
    assert sorted(p["i"] for p in params if isinstance(p, dict)) == [0, 1, 2, 3, 4]


def test_botocore_errors_map_to_the_bus_error_tree() -> None:
    def client_error(code: str, message: str = "") -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": message}}, "SendMessage")

    missing = translate_client_error(
        client_error("AWS.SimpleQueueService.NonExistentQueue"), operation="SendMessage", queue="q"
    )
    too_long = translate_client_error(
        client_error("InvalidParameterValue", "Message must be shorter than 262144 bytes."),
        operation="SendMessage",
        queue="q",
        size_bytes=300_000,
    )
    throttled = translate_client_error(
        client_error("RequestThrottled"), operation="ReceiveMessage", queue="q"
    )
    other = translate_client_error(client_error("AccessDenied"), operation="SendMessage", queue="q")

    assert isinstance(missing, ConnectionClosed)
    assert missing.retriable
    assert isinstance(too_long, MessageTooLarge)
    assert too_long.size_bytes == 300_000
    assert isinstance(throttled, ConnectionClosed)
    assert type(other) is TransportError
    assert "AccessDenied" in str(other)


async def test_a_receiver_whose_queue_was_lost_creates_it_again_and_receives(
    open_transport: Open, raw_sqs: Any
) -> None:
    # What a restarted moto does to every queue (it keeps them in memory): the owner of
    # a queue makes it again instead of failing every poll from then on.
    receiver = await open_transport(receive_queue="lost", keep_visible=False)
    url = (await raw_sqs.get_queue_url(QueueName=receiver.receive_queue_name))["QueueUrl"]
    await raw_sqs.delete_queue(QueueUrl=url)
    receiving = asyncio.ensure_future(receiver.receive())

    async def queue_back() -> bool:
        listed = await raw_sqs.list_queues(QueueNamePrefix=receiver.receive_queue_name)
        return url in listed.get("QueueUrls", [])

    await wait_until(queue_back)
    sender = await open_transport(send_queue="lost")
    await within(sender.send(Request(id=1, method="after")))
    delivery = await within(receiving)
    assert delivery.message == Request(id=1, method="after")
