"""Smoke test of the real Kafka broker the test session runs (KRaft, 127.0.0.1)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cluster.services.process import poll_until

pytestmark = pytest.mark.kafka


async def _topic_listed(admin: AIOKafkaAdminClient, topic: str) -> bool:
    topics: list[str] = await admin.list_topics()
    return topic in topics


async def test_a_topic_carries_messages_to_a_consumer_group_and_can_be_deleted(
    kafka_bootstrap: str, unique_name: str
) -> None:
    sent = [f"message {i}".encode() for i in range(3)]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    consumer = AIOKafkaConsumer(
        unique_name,
        bootstrap_servers=kafka_bootstrap,
        group_id=unique_name,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await admin.start()
    try:
        async with asyncio.timeout(60):
            await admin.create_topics([NewTopic(unique_name, 1, 1)])

            async def listed() -> bool:
                return await _topic_listed(admin, unique_name)

            # The controller accepted it; the broker's metadata may list it a moment later
            # (a fresh clone's run saw it missing right after the create).
            await poll_until(listed, timeout_s=30)

            await producer.start()
            try:
                for value in sent:
                    await producer.send_and_wait(unique_name, value, key=b"k")
            finally:
                await producer.stop()

            await consumer.start()
            try:
                received: list[bytes] = []
                while len(received) < len(sent):
                    batches = await consumer.getmany(timeout_ms=1000)
                    received += [r.value for records in batches.values() for r in records]
                await consumer.commit()
                committed = await consumer.committed(TopicPartition(unique_name, 0))
            finally:
                await consumer.stop()
            assert received == sent
            assert committed == len(sent)

            await admin.delete_topics([unique_name])

            async def deleted() -> bool:
                return not await _topic_listed(admin, unique_name)

            await poll_until(deleted, timeout_s=30)
    finally:
        await admin.close()
