"""KafkaTransport against a real broker: acknowledgement, groups, dead letters, lag.

The topic-naming tests need no broker and stay unit tests; the rest are marked kafka.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.waiting import wait_until
from transports.base import Delivery
from transports.envelope import Envelope
from transports.errors import (
    PARSE_ERROR,
    BusTimeout,
    ConnectionClosed,
    MessageTooLarge,
    ParseError,
    TransportError,
)
from transports.kafka.clients import wait_for_topic_metadata
from transports.kafka.transport import (
    KafkaTransport,
    KafkaTransportConfig,
    TopicNames,
    consumer_group_lag,
    ensure_topics,
)
from transports.message import Notification, Request, Response

BOUND_S = 60.0
Opener = Callable[..., Awaitable[KafkaTransport]]


@pytest.fixture
async def open_transport(kafka_bootstrap: str) -> AsyncIterator[Opener]:
    """Start KafkaTransports from config fields; all are closed after the test."""
    opened: list[KafkaTransport] = []

    async def open_(**fields: Any) -> KafkaTransport:
        transport = KafkaTransport(KafkaTransportConfig(bootstrap=kafka_bootstrap, **fields))
        opened.append(transport)
        async with asyncio.timeout(BOUND_S):
            return await transport.start()

    yield open_
    for transport in opened:
        await transport.close()


async def receive(transport: KafkaTransport) -> Delivery:
    async with asyncio.timeout(BOUND_S):
        return await transport.receive()


async def lag(bootstrap: str, group: str, topic: str) -> int:
    async with asyncio.timeout(BOUND_S):
        return await consumer_group_lag(bootstrap, group, topic)


def numbered(i: int) -> Request:
    return Request(id=i, method="tools/call", params={"i": i})


async def read_raw(bootstrap: str, topic: str, partition_number: int = 0) -> Any:
    """The first record of one partition of ``topic``, read without a group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, partition_number)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        async with asyncio.timeout(BOUND_S):
            return await consumer.getone()
    finally:
        await consumer.stop()


async def produce_raw(bootstrap: str, topic: str, value: bytes, **kwargs: Any) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        async with asyncio.timeout(BOUND_S):
            await producer.send_and_wait(topic, value, **kwargs)
    finally:
        await producer.stop()


def test_topic_names_follow_the_design_under_a_prefix() -> None:
    names = TopicNames("prod.")
    assert names.requests_global() == "prod.mcp.requests.global"
    assert names.requests_for_capability("search") == "prod.mcp.requests.search"
    assert names.requests_for_server("srv-1") == "prod.mcp.requests.srv-1"
    assert names.responses_for_client("c-42") == "prod.mcp.responses.c-42"
    assert names.discovery_topic() == "prod.mcp.server.discovery"
    assert names.dlq_topic() == "prod.mcp.dlq"
    assert TopicNames().requests_global() == "mcp.requests.global"


@pytest.mark.parametrize("bad", ["a/b", "with space", "ü", "x" * 250, "global"])
def test_topic_names_refuse_what_kafka_or_the_layout_cannot_hold(bad: str) -> None:
    with pytest.raises(ValueError):
        TopicNames().requests_for_capability(bad)


class LaggingMetadata:
    """A consumer whose client learns of a new topic only on its ``known_after``-th
    metadata fetch (a broker still spreading it), or never (None)."""

    def __init__(self, known_after: int | None) -> None:
        self.fetches = 0
        self._known_after = known_after
        self._client = self
        self.cluster = self

    async def force_metadata_update(self) -> bool:
        self.fetches += 1
        return True

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        known = self._known_after is not None and self.fetches >= self._known_after
        return {0, 1} if known else None


async def test_a_new_consumer_fetches_metadata_until_it_knows_its_topics() -> None:
    # Left to aiokafka, a topic missing from the first fetch is fetched again only every
    # 5 min, and the transport's receives starve until then.
    consumer = LaggingMetadata(known_after=3)
    await wait_for_topic_metadata(consumer, ["t.requests"], timeout_s=10)
    assert consumer.fetches == 3
    already = LaggingMetadata(known_after=0)
    await wait_for_topic_metadata(already, ["t.requests"], timeout_s=10)
    assert already.fetches == 0  # the usual case: no extra round trip


async def test_a_topic_the_cluster_never_shows_fails_the_start_within_its_bound() -> None:
    with pytest.raises(BusTimeout, match=r"t\.missing"):
        await wait_for_topic_metadata(LaggingMetadata(None), ["t.missing"], 0.2)


@pytest.mark.kafka
async def test_an_unacked_record_is_redelivered_to_the_next_member_and_an_acked_one_is_not(
    kafka_bootstrap: str, unique_name: str, open_transport: Opener
) -> None:
    producer = await open_transport(send_topic=unique_name)
    for i in range(2):
        await producer.send(numbered(i), Envelope(client_id="c", request_id=f"r{i}"))
    first = await open_transport(receive_topics=(unique_name,), group_id=unique_name)
    processed = await receive(first)
    unprocessed = await receive(first)
    assert (processed.message, unprocessed.message) == (numbered(0), numbered(1))
    await processed.ack()
    await first.close()
    second = await open_transport(receive_topics=(unique_name,), group_id=unique_name)
    again = await receive(second)
    assert again.message == numbered(1)
    assert again.envelope == Envelope(client_id="c", request_id="r1")
    await again.ack()
    assert await lag(kafka_bootstrap, unique_name, unique_name) == 0


@pytest.mark.kafka
async def test_acking_out_of_order_never_commits_past_an_unacked_record(
    kafka_bootstrap: str, unique_name: str, open_transport: Opener
) -> None:
    producer = await open_transport(send_topic=unique_name)
    for i in range(3):
        await producer.send(numbered(i))
    consumer = await open_transport(receive_topics=(unique_name,), group_id=unique_name)
    deliveries = [await receive(consumer) for _ in range(3)]
    await deliveries[2].ack()
    await deliveries[1].ack()
    assert await lag(kafka_bootstrap, unique_name, unique_name) == 3
    await deliveries[0].ack()
    assert await lag(kafka_bootstrap, unique_name, unique_name) == 0
    await deliveries[0].ack()  # a second ack is harmless


@pytest.mark.kafka
async def test_a_nacked_record_comes_back_before_the_next_and_nothing_else_repeats(
    unique_name: str, open_transport: Opener
) -> None:
    producer = await open_transport(send_topic=unique_name)
    for i in range(3):
        await producer.send(numbered(i))
    consumer = await open_transport(receive_topics=(unique_name,), group_id=unique_name)
    zero, one = await receive(consumer), await receive(consumer)
    await zero.nack()
    retried = await receive(consumer)
    assert retried.message == numbered(0)
    await zero.ack()  # the nacked delivery is spent; only `retried` counts now
    assert (await receive(consumer)).message == numbered(2)
    assert one.message == numbered(1)


@pytest.mark.kafka
async def test_two_members_of_a_group_split_the_topic_and_each_record_arrives_once(
    kafka_bootstrap: str, unique_name: str, open_transport: Opener
) -> None:
    members = [
        await open_transport(
            receive_topics=(unique_name,), group_id=unique_name, partitions=4, client_id=f"m{i}"
        )
        for i in range(2)
    ]

    def split() -> bool:
        left, right = (member.assignment() for member in members)
        return bool(left) and bool(right) and not left & right and len(left | right) == 4

    await wait_until(split, timeout_s=BOUND_S)
    producer = await open_transport(send_topic=unique_name, partitions=4)
    count = 40
    for i in range(count):
        await producer.send(numbered(i), Envelope(client_id="c", request_id=f"r{i}"))
    received: dict[int, list[int]] = {0: [], 1: []}

    async def drain(index: int) -> None:
        while True:
            delivery = await members[index].receive()
            assert isinstance(delivery.message, Request)
            received[index].append(int(delivery.message.id))
            await delivery.ack()

    tasks = [asyncio.create_task(drain(i)) for i in range(2)]
    try:
        await wait_until(lambda: len(received[0]) + len(received[1]) >= count, BOUND_S)
        assert await lag(kafka_bootstrap, unique_name, unique_name) == 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert sorted(received[0] + received[1]) == list(range(count))
    assert received[0], "the first member got nothing"
    assert received[1], "the second member got nothing"


@pytest.mark.kafka
async def test_a_record_fetched_before_a_rebalance_took_its_partition_is_left_to_its_new_owner(
    kafka_bootstrap: str, unique_name: str, open_transport: Opener
) -> None:
    def member(name: str) -> Awaitable[KafkaTransport]:
        return open_transport(
            receive_topics=(unique_name,),
            group_id=unique_name,
            partitions=2,
            client_id=name,
            commit_interval_ms=20,
        )

    first = await member("first")
    second = await member("second")
    await wait_until(lambda: len(first.assignment()) == len(second.assignment()) == 1, BOUND_S)
    ((_, kept),) = first.assignment()
    ((_, lost),) = second.assignment()
    for number in (kept, lost):
        body = json.dumps({"jsonrpc": "2.0", "id": number, "method": "m"}).encode()
        await produce_raw(kafka_bootstrap, unique_name, body, partition=number)
    # The race, made certain: a record of the partition the rebalance moved away was
    # fetched before it and is still held (a receive cut short stashes its record).
    first._stash = await read_raw(kafka_bootstrap, unique_name, lost)
    mine = await receive(first)
    assert isinstance(mine.message, Request)
    assert mine.message.id == kept
    theirs = await receive(second)
    assert isinstance(theirs.message, Request)
    assert theirs.message.id == lost
    for delivery in (mine, theirs):
        await delivery.ack()
    # Both members' commits land: a book kept for a partition another member owns
    # would make every commit of the first fail, and its lag would never drain.
    async with asyncio.timeout(BOUND_S):  # bounded polling: each query is a broker round trip
        while await lag(kafka_bootstrap, unique_name, unique_name) != 0:
            pass


@pytest.mark.kafka
async def test_an_undecodable_record_is_dead_lettered_and_the_next_one_arrives(
    kafka_bootstrap: str, unique_name: str, open_transport: Opener
) -> None:
    prefix = f"{unique_name}."
    consumer = await open_transport(
        receive_topics=(unique_name,), group_id=unique_name, topic_prefix=prefix
    )
    await produce_raw(kafka_bootstrap, unique_name, b"{not json", headers=[("x-origin", b"t")])
    producer = await open_transport(send_topic=unique_name)
    await producer.send(numbered(1))
    with pytest.raises(ParseError):
        await receive(consumer)
    good = await receive(consumer)
    assert good.message == numbered(1)
    await good.ack()
    assert await lag(kafka_bootstrap, unique_name, unique_name) == 0
    dead = await read_raw(kafka_bootstrap, TopicNames(prefix).dlq_topic())
    assert dead.value == b"{not json"
    headers = dict(dead.headers)
    assert headers["x-origin"] == b"t"
    assert headers["raybus-dlq-source"] == f"{unique_name}/0/0".encode()
    assert b"JSON-RPC -32700" in headers["raybus-dlq-error"]


@pytest.mark.kafka
async def test_an_undecodable_request_with_a_reply_address_is_answered_with_an_error(
    kafka_bootstrap: str, unique_name: str, open_transport: Opener
) -> None:
    replies = f"{unique_name}.replies"
    client = await open_transport(receive_topics=(replies,), group_id=f"{unique_name}-client")
    worker = await open_transport(receive_topics=(unique_name,), group_id=unique_name)
    envelope = Envelope(client_id="c", request_id="r9", reply_to=replies)
    headers = [(name, value.encode()) for name, value in envelope.to_headers().items()]
    await produce_raw(kafka_bootstrap, unique_name, b"[1,2", headers=headers)
    with pytest.raises(ParseError):
        await receive(worker)
    answer = await receive(client)
    assert isinstance(answer.message, Response)
    assert answer.message.id is None
    assert answer.message.error is not None
    assert answer.message.error.code == PARSE_ERROR
    assert answer.envelope == envelope


@pytest.mark.kafka
async def test_every_envelope_field_round_trips_as_headers_and_the_key_is_the_correlation_key(
    kafka_bootstrap: str, unique_name: str, open_transport: Opener
) -> None:
    envelope = Envelope(
        client_id="client-7",
        request_id="req-3",
        principal="alice",
        reply_to="somewhere.responses",
        deadline_unix_s=1_900_000_000.25,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="vendor=x",
        idempotency_key="idem-1",
        method="tools/call",
        name="add",
        attributes=(("k1", "v1"), ("k2", "ü")),
    )
    sender = await open_transport(send_topic=unique_name)
    await sender.send(Notification(method="n", params={"x": 1}), envelope)
    receiver = await open_transport(receive_topics=(unique_name,), group_id=unique_name)
    delivery = await receive(receiver)
    assert delivery.envelope == envelope
    assert delivery.message == Notification(method="n", params={"x": 1})
    record = await read_raw(kafka_bootstrap, unique_name)
    assert json.loads(record.key) == ["alice", "client-7", "req-3"]
    assert delivery.size_bytes == len(record.value)


@pytest.mark.kafka
async def test_without_a_send_topic_messages_go_to_the_envelopes_reply_address(
    unique_name: str, open_transport: Opener
) -> None:
    replies = f"{unique_name}.r"
    client = await open_transport(receive_topics=(replies,), group_id=unique_name)
    worker = await open_transport()  # send-only, routes by reply_to
    envelope = Envelope(client_id="c", request_id="1", reply_to=replies)
    await worker.send(Response.success(1, {"ok": True}), envelope)
    assert (await receive(client)).message == Response.success(1, {"ok": True})
    with pytest.raises(ConnectionClosed):
        await worker.receive()


@pytest.mark.kafka
async def test_lag_is_end_minus_committed_and_counts_from_the_beginning_without_a_commit(
    kafka_bootstrap: str, unique_name: str, open_transport: Opener
) -> None:
    producer = await open_transport(send_topic=unique_name, partitions=3)
    for i in range(9):
        await producer.send(numbered(i), Envelope(client_id="c", request_id=f"r{i}"))
    assert await lag(kafka_bootstrap, "nobody-committed", unique_name) == 9
    consumer = await open_transport(receive_topics=(unique_name,), group_id=unique_name)
    deliveries = [await receive(consumer) for _ in range(9)]
    for delivery in deliveries[:4]:
        await delivery.ack()
    # One partition's records arrive in offset order, so the first four received are a
    # prefix of every partition: all four are committed, whatever partitions they span.
    assert await lag(kafka_bootstrap, unique_name, unique_name) == 5
    for delivery in deliveries[4:]:
        await delivery.ack()
    assert await lag(kafka_bootstrap, unique_name, unique_name) == 0


@pytest.mark.kafka
async def test_topic_creation_is_idempotent_and_oversize_sends_are_refused(
    kafka_bootstrap: str, unique_name: str, open_transport: Opener
) -> None:
    await ensure_topics(kafka_bootstrap, [unique_name], partitions=2)
    await ensure_topics(kafka_bootstrap, [unique_name], partitions=2)
    sender = await open_transport(send_topic=unique_name, max_message_bytes=100)
    with pytest.raises(MessageTooLarge):
        await sender.send(Notification(method="big", params={"x": "y" * 200}))
    await sender.send(Notification(method="small"))


@pytest.mark.kafka
async def test_interval_commits_cover_every_ack_and_close_commits_the_rest(
    kafka_bootstrap: str, unique_name: str, open_transport: Opener
) -> None:
    producer = await open_transport(send_topic=unique_name)
    for i in range(6):
        await producer.send(numbered(i))
    consumer = await open_transport(
        receive_topics=(unique_name,), group_id=unique_name, commit_interval_ms=50
    )
    deliveries = [await receive(consumer) for _ in range(6)]
    for delivery in deliveries[:3]:
        await delivery.ack()
    async with asyncio.timeout(BOUND_S):  # bounded polling: each query is a broker round trip
        while await lag(kafka_bootstrap, unique_name, unique_name) != 3:
            pass
    for delivery in deliveries[3:]:
        await delivery.ack()
    await consumer.close()  # before the interval is up: close commits what was acked
    assert await lag(kafka_bootstrap, unique_name, unique_name) == 0


@pytest.mark.kafka
async def test_receives_cut_short_by_timeouts_lose_no_record_even_without_a_group(
    unique_name: str, open_transport: Opener
) -> None:
    consumer = await open_transport(receive_topics=(unique_name,))  # alone: no group
    producer = await open_transport(send_topic=unique_name)
    count = 60
    sending = asyncio.create_task(_send_numbered(producer, count))
    received: list[int] = []
    async with asyncio.timeout(BOUND_S):
        while len(received) < count:
            try:
                # Deliberately tiny: many receives are cancelled mid-wait or mid-fetch.
                async with asyncio.timeout(0.002):
                    delivery = await consumer.receive()
            except TimeoutError:
                continue
            assert isinstance(delivery.message, Request)
            received.append(int(delivery.message.id))
            await delivery.ack()  # bookkeeping only: nothing to commit without a group
    await sending
    assert received == list(range(count))


async def _send_numbered(producer: KafkaTransport, count: int) -> None:
    for i in range(count):
        await producer.send(numbered(i))


@pytest.mark.kafka
async def test_a_consumer_whose_group_task_died_is_replaced_and_reading_goes_on(
    unique_name: str, open_transport: Opener
) -> None:
    producer = await open_transport(send_topic=unique_name)
    reader = await open_transport(receive_topics=(unique_name,), group_id=unique_name)
    await producer.send(numbered(1))
    first = await receive(reader)
    await first.ack()
    # The fault: aiokafka's group task dies as it did while a broker was away (a
    # coordinator lookup with no broker known asserts); from then on its getone raises.
    dying = reader._consumer
    assert dying is not None

    async def no_broker_known(*_: Any) -> int:
        raise AssertionError("Did we not perform bootstrap?")

    dying._client.coordinator_lookup = no_broker_known
    dying._coordinator.coordinator_dead()
    await producer.send(numbered(2))
    failures = 0
    async with asyncio.timeout(BOUND_S):
        while True:
            try:
                delivery = await reader.receive()
            except TransportError:
                failures += 1  # the dead task's error, said (the caller's loop retries)
                continue
            break
    assert delivery.message == numbered(2)
    assert reader._consumer is not dying
    assert failures >= 1
    await delivery.ack()
