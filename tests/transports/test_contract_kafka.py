"""The shared transport contract over a real Kafka broker.

Every test of ``test_contract`` runs here again with ``pair`` overridden: ``a`` produces to
one topic that ``b`` consumes and back, each in its own consumer group. Assertions that
cannot hold for a broker (a peer's close) are decided by the declared capabilities.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.transports.pairs import CONTRACT_LIMITS, TransportPair
from tests.transports.test_contract import *  # noqa: F403 - the whole suite, again
from transports.kafka.transport import KafkaTransport, KafkaTransportConfig

pytestmark = pytest.mark.kafka


def _end(bootstrap: str, name: str, side: str, send: str, receive: str) -> KafkaTransport:
    return KafkaTransport(
        KafkaTransportConfig(
            bootstrap=bootstrap,
            send_topic=send,
            receive_topics=(receive,),
            group_id=f"{name}-{side}",
            topic_prefix=f"{name}.",
            partitions=2,
            client_id=f"{name}-{side}",
            max_message_bytes=CONTRACT_LIMITS.max_message_bytes,
            max_depth=CONTRACT_LIMITS.max_depth,
        )
    )


# Overrides the suite's parametrized ``pair`` (imported above) for this module.
@pytest.fixture  # type: ignore[no-redef]
async def pair(kafka_bootstrap: str, unique_name: str) -> AsyncIterator[TransportPair]:
    a_to_b, b_to_a = f"{unique_name}.a-to-b", f"{unique_name}.b-to-a"
    a = await _end(kafka_bootstrap, unique_name, "a", a_to_b, b_to_a).start()
    b = await _end(kafka_bootstrap, unique_name, "b", b_to_a, a_to_b).start()
    producer = a._producer
    assert producer is not None

    async def inject(raw: bytes) -> None:
        # Straight to the broker: none of KafkaTransport.send's checks apply.
        await producer.send_and_wait(a_to_b, raw, key=a.config.client_id.encode())

    try:
        yield TransportPair(a, b, inject)
    finally:
        await a.close()
        await b.close()
