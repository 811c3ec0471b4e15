"""KafkaLagReader against real brokers: the same lag as a one-off query, on clients it
keeps, replaces after a failure and always closes.

The clients the reader creates are recorded (their constructors are wrapped where the
reader looks them up) so a test can count them and check that each one ended closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from cluster.services.state import default_cache_dir
from tests.faults.restartable import RestartableKafka, halt, resume
from transports.errors import BusError, ConnectionClosed
from transports.kafka import admin as kafka_admin
from transports.kafka.admin import KafkaLagReader, consumer_group_lag, ensure_topics

pytestmark = pytest.mark.kafka

BOUND_S = 60.0
# A query against a broker that is away fails within this (the reader's own bound).
QUERY_TIMEOUT_S = 5.0
# After the broker is back, the reader answers again within this bound (it stops a hang).
RECOVERY_BOUND_S = 90.0


@dataclass
class Created:
    """Every admin client and consumer the reader created, in order."""

    admins: list[AIOKafkaAdminClient] = field(default_factory=list)
    consumers: list[AIOKafkaConsumer] = field(default_factory=list)

    def all(self) -> list[Any]:
        return [*self.admins, *self.consumers]

    def forget(self) -> None:
        """Count from here on (the test's own setup creates admin clients too)."""
        self.admins.clear()
        self.consumers.clear()


def is_closed(client: Any) -> bool:
    """Closed here, with no connection of its left open."""
    conns = client._client._conns.values()
    return bool(client._closed) and not any(conn.connected() for conn in conns)


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> Created:
    record = Created()

    def recorded_admin(**options: Any) -> Any:
        admin = AIOKafkaAdminClient(**options)
        record.admins.append(admin)
        return admin

    def recorded_consumer(*topics: str, **options: Any) -> Any:
        consumer = AIOKafkaConsumer(*topics, **options)
        record.consumers.append(consumer)
        return consumer

    monkeypatch.setattr(kafka_admin, "AIOKafkaAdminClient", recorded_admin)
    monkeypatch.setattr(kafka_admin, "AIOKafkaConsumer", recorded_consumer)
    return record


@pytest.fixture
async def reader(kafka_bootstrap: str) -> AsyncIterator[KafkaLagReader]:
    lag_reader = KafkaLagReader(kafka_bootstrap, timeout_s=QUERY_TIMEOUT_S * 6)
    yield lag_reader
    await lag_reader.close()


async def produce(bootstrap: str, topic: str, partition: int, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        async with asyncio.timeout(BOUND_S):
            for i in range(count):
                await producer.send_and_wait(topic, b"%d" % i, partition=partition)
    finally:
        await producer.stop()


async def commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        async with asyncio.timeout(BOUND_S):
            await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def delete_before(bootstrap: str, partition: TopicPartition, offset: int) -> None:
    """Move the partition's beginning offset to ``offset`` (as retention would)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        async with asyncio.timeout(BOUND_S):
            await admin.delete_records({partition: RecordsToDelete(offset)})
    finally:
        await admin.close()


async def bounded_lag(reader: KafkaLagReader, group: str, topic: str) -> int:
    async with asyncio.timeout(BOUND_S):
        return await reader.lag(group, topic)


async def test_the_reader_answers_what_a_one_off_query_answers(
    kafka_bootstrap: str, unique_name: str, reader: KafkaLagReader
) -> None:
    topic, committed_group, new_group = unique_name, f"{unique_name}-a", f"{unique_name}-b"
    await ensure_topics(kafka_bootstrap, [topic], partitions=2)
    first, second = TopicPartition(topic, 0), TopicPartition(topic, 1)
    await produce(kafka_bootstrap, topic, 0, 5)
    await produce(kafka_bootstrap, topic, 1, 3)
    await delete_before(kafka_bootstrap, second, 1)  # its beginning is 1, not 0
    await commit(kafka_bootstrap, committed_group, {first: 2})  # the second: none committed

    # Partition 0 counts from its commit (5 - 2), partition 1 from its beginning (3 - 1).
    assert await bounded_lag(reader, committed_group, topic) == (5 - 2) + (3 - 1)
    assert await bounded_lag(reader, new_group, topic) == (5 - 0) + (3 - 1)
    for group in (committed_group, new_group):
        async with asyncio.timeout(BOUND_S):
            one_off = await consumer_group_lag(kafka_bootstrap, group, topic)
        assert await bounded_lag(reader, group, topic) == one_off


async def test_repeated_queries_reuse_the_clients_and_see_new_records(
    kafka_bootstrap: str, unique_name: str, created: Created
) -> None:
    topic, other = unique_name, f"{unique_name}-other"
    await ensure_topics(kafka_bootstrap, [topic, other])
    created.forget()
    reader = KafkaLagReader(kafka_bootstrap)
    try:
        assert await bounded_lag(reader, "g", topic) == 0
        for _ in range(5):
            assert await bounded_lag(reader, "g", topic) == 0
            assert await bounded_lag(reader, "g", other) == 0
        await produce(kafka_bootstrap, topic, 0, 4)
        await commit(kafka_bootstrap, "g", {TopicPartition(topic, 0): 1})
        assert await bounded_lag(reader, "g", topic) == 4 - 1
        assert (len(created.admins), len(created.consumers)) == (1, 1)
        assert not any(is_closed(client) for client in created.all())
    finally:
        await reader.close()
    assert all(is_closed(client) for client in created.all())
    with pytest.raises(ConnectionClosed):
        await reader.lag("g", topic)


async def test_a_query_cancelled_mid_start_leaves_no_client_open(
    kafka_bootstrap: str, unique_name: str, created: Created
) -> None:
    await ensure_topics(kafka_bootstrap, [unique_name])
    await produce(kafka_bootstrap, unique_name, 0, 2)
    created.forget()
    reader = KafkaLagReader(kafka_bootstrap)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0):  # cancelled at its first wait: a client's start
                await reader.lag("g", unique_name)
        assert await bounded_lag(reader, "g", unique_name) == 2
        assert (len(created.admins), len(created.consumers)) == (2, 2)
        # The cancelled query's clients are closed by then or by the reader's close.
    finally:
        await reader.close()
    assert all(is_closed(client) for client in created.all())


async def test_the_reader_answers_again_after_its_broker_restarts(
    unique_name: str, created: Created
) -> None:
    kafka = RestartableKafka(default_cache_dir())
    await kafka.start()
    reader = KafkaLagReader(kafka.bootstrap, timeout_s=QUERY_TIMEOUT_S)
    try:
        await ensure_topics(kafka.bootstrap, [unique_name])
        await produce(kafka.bootstrap, unique_name, 0, 3)
        created.forget()
        assert await bounded_lag(reader, "g", unique_name) == 3
        assert kafka.launched is not None
        await halt(kafka)
        with pytest.raises(BusError):
            await bounded_lag(reader, "g", unique_name)
        assert all(is_closed(client) for client in created.all())  # the failed ones
        await resume(kafka, kafka.launched)
        async with asyncio.timeout(RECOVERY_BOUND_S):
            while True:
                try:
                    lag = await reader.lag("g", unique_name)
                except BusError:
                    await asyncio.sleep(0.5)  # the broker is still electing: ask again
                    continue
                break
        assert lag == 3
        assert len(created.admins) >= 2  # replaced, not retried on the dead ones
        assert not is_closed(created.admins[-1])
        assert not is_closed(created.consumers[-1])
    finally:
        await reader.close()
        await kafka.stop()
    assert all(is_closed(client) for client in created.all())
