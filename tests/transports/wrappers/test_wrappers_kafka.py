"""The wrappers' broker-specific promises on a real Kafka broker.

Batching: a batch is one record, acknowledged once all of its messages are, redelivered
whole when one is nacked. Compression: the record holds the compressed frame.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.transports.kafka_pairs import kafka_ends
from transports.kafka.transport import KafkaTransport
from transports.message import Notification
from transports.wrappers.batching import BatchingTransport
from transports.wrappers.compression import CompressionTransport

pytestmark = pytest.mark.kafka

BOUND_S = 60.0


@pytest.fixture
async def kafka_pair(
    kafka_bootstrap: str, unique_name: str
) -> AsyncIterator[tuple[KafkaTransport, KafkaTransport]]:
    async with kafka_ends(kafka_bootstrap, unique_name) as ends:
        yield ends.a, ends.b


async def test_a_nacked_message_brings_its_whole_batch_back_and_acks_settle_it(
    kafka_pair: tuple[KafkaTransport, KafkaTransport],
) -> None:
    raw_a, raw_b = kafka_pair
    sender = BatchingTransport(raw_a, max_batch_messages=3, linger_s=30)
    receiver = BatchingTransport(raw_b)
    sent = [Notification(method="n", params={"i": i}) for i in range(3)]
    async with asyncio.timeout(BOUND_S):
        await asyncio.gather(*(sender.send(message) for message in sent))
        first = [await receiver.receive() for _ in sent]
        assert [delivery.message for delivery in first] == sent
        await first[0].ack()
        await first[1].nack()
        await first[2].ack()
        again = [await receiver.receive() for _ in sent]
        assert [delivery.message for delivery in again] == sent
        for delivery in again:
            await delivery.ack()
        # A full batch leaves at once (a single message would linger its 30 s).
        after = [Notification(method="after", params={"i": i}) for i in range(3)]
        await asyncio.gather(*(sender.send(message) for message in after))
        later = [await receiver.receive() for _ in after]
    assert [delivery.message for delivery in later] == after


async def test_a_large_message_is_one_compressed_record_on_the_broker(
    kafka_pair: tuple[KafkaTransport, KafkaTransport],
) -> None:
    raw_a, raw_b = kafka_pair
    large = Notification(method="report", params={"text": "the same line again\n" * 500})
    async with asyncio.timeout(BOUND_S):
        await CompressionTransport(raw_a).send(large)
        record = await raw_b.receive()  # the raw record, read without the wrapper
    assert isinstance(record.message, Notification)
    assert record.message.method == "rpc.raybus.zstd"
    assert record.size_bytes < 1000 < len(str(large.params))
    assert "the same line again" not in str(record.message.params)
