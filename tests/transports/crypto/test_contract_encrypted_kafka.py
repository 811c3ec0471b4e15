"""The shared transport contract with EncryptedTransport around a real Kafka pair."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.transports.crypto.helpers import inner_limits, rings, rotate_three_times_under_load
from tests.transports.pairs import CONTRACT_LIMITS, TransportPair
from tests.transports.test_contract import *  # noqa: F403 - the whole suite, again
from tests.transports.test_contract import BULK_BOUND_S
from transports.codec import encode_message
from transports.crypto.seal import Direction, Sealer
from transports.crypto.transport import EncryptedTransport
from transports.kafka.transport import KafkaTransport, KafkaTransportConfig

pytestmark = pytest.mark.kafka


def _end(bootstrap: str, name: str, side: str, send: str, receive: str) -> KafkaTransport:
    limits = inner_limits()
    return KafkaTransport(
        KafkaTransportConfig(
            bootstrap=bootstrap,
            send_topic=send,
            receive_topics=(receive,),
            group_id=f"{name}-{side}",
            topic_prefix=f"{name}.",
            partitions=2,
            client_id=f"{name}-{side}",
            max_message_bytes=limits.max_message_bytes,
        )
    )


# Overrides the suite's parametrized ``pair`` (imported above) for this module.
@pytest.fixture  # type: ignore[no-redef]
async def pair(kafka_bootstrap: str, unique_name: str) -> AsyncIterator[TransportPair]:
    a_to_b, b_to_a = f"{unique_name}.a-to-b", f"{unique_name}.b-to-a"
    inner_a = await _end(kafka_bootstrap, unique_name, "a", a_to_b, b_to_a).start()
    inner_b = await _end(kafka_bootstrap, unique_name, "b", b_to_a, a_to_b).start()
    ring_a, ring_b = rings("k1")
    a = EncryptedTransport(
        inner_a,
        ring_a,
        sender_id="client-a",
        sends=Direction.TO_WORKER,
        send_to=a_to_b,
        receive_as=(b_to_a,),
        limits=CONTRACT_LIMITS,
    )
    b = EncryptedTransport(
        inner_b,
        ring_b,
        sender_id="worker-b",
        sends=Direction.TO_CLIENT,
        send_to=b_to_a,
        receive_as=(a_to_b,),
        limits=CONTRACT_LIMITS,
    )
    producer = inner_a._producer
    assert producer is not None
    injector = Sealer(ring_a, "injector", Direction.TO_WORKER)

    async def inject(raw: bytes) -> None:
        # Sealed by a legitimate sender, straight to the broker: no sending-side check.
        sealed, _ = injector.seal(raw, None, a_to_b)
        await producer.send_and_wait(a_to_b, encode_message(sealed), key=b"injector")

    try:
        yield TransportPair(a, b, inject)
    finally:
        await a.close()
        await b.close()


async def test_three_key_rotations_under_load_on_kafka_fail_no_call(pair: TransportPair) -> None:
    client, worker = pair.a, pair.b
    assert isinstance(client, EncryptedTransport)
    assert isinstance(worker, EncryptedTransport)
    async with asyncio.timeout(BULK_BOUND_S):
        await rotate_three_times_under_load(
            client, worker, client.channel.keyring, worker.channel.keyring, calls_each=60
        )
