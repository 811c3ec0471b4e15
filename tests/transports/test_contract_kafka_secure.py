"""The shared transport contract again, over the secured broker's SASL_SSL listener
(TLS + SCRAM-SHA-512): security changes how clients connect, never what they promise."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.services_plugin import SecureKafka
from tests.transports.pairs import CONTRACT_LIMITS, TransportPair
from tests.transports.test_contract import *  # noqa: F403 - the whole suite, again
from transports.kafka.security import KafkaSecurity
from transports.kafka.transport import KafkaTransport, KafkaTransportConfig

pytestmark = pytest.mark.kafka


def _end(broker: SecureKafka, name: str, side: str, send: str, receive: str) -> KafkaTransport:
    return KafkaTransport(
        KafkaTransportConfig(
            bootstrap=broker.sasl_ssl_bootstrap,
            send_topic=send,
            receive_topics=(receive,),
            group_id=f"{name}-{side}",
            topic_prefix=f"{name}.",
            partitions=2,
            client_id=f"{name}-{side}",
            max_message_bytes=CONTRACT_LIMITS.max_message_bytes,
            max_depth=CONTRACT_LIMITS.max_depth,
            security=KafkaSecurity(
                security_protocol="SASL_SSL",
                sasl_mechanism="SCRAM-SHA-512",
                sasl_username=broker.username,
                sasl_password=broker.password,
                ssl_cafile=str(broker.tls.ca),
            ),
        )
    )


# Overrides the suite's parametrized ``pair`` (imported above) for this module.
@pytest.fixture  # type: ignore[no-redef]
async def pair(secure_kafka: SecureKafka, unique_name: str) -> AsyncIterator[TransportPair]:
    a_to_b, b_to_a = f"{unique_name}.a-to-b", f"{unique_name}.b-to-a"
    a = await _end(secure_kafka, unique_name, "a", a_to_b, b_to_a).start()
    b = await _end(secure_kafka, unique_name, "b", b_to_a, a_to_b).start()
    producer = a._producer
    assert producer is not None

    async def inject(raw: bytes) -> None:
        # Straight to the broker (over the same secured connection): no send checks apply.
        await producer.send_and_wait(a_to_b, raw, key=a.config.client_id.encode())

    try:
        yield TransportPair(a, b, inject)
    finally:
        await a.close()
        await b.close()
