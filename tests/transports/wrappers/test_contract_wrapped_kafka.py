"""The shared transport contract over a real Kafka broker, with each wrapper around it.

The Kafka pair is the one of ``test_contract_kafka`` (its own topics and groups per
test); ``inject`` still produces raw records straight to the broker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.transports.pairs import TransportPair
from tests.transports.test_contract import *  # noqa: F403 - the whole suite, again
from tests.transports.test_contract_kafka import _end
from tests.transports.wrappers.wrapping import WRAPS

pytestmark = pytest.mark.kafka


# Overrides the suite's parametrized ``pair`` (imported above) for this module.
@pytest.fixture(params=sorted(WRAPS))  # type: ignore[no-redef]
async def pair(
    request: pytest.FixtureRequest, kafka_bootstrap: str, unique_name: str
) -> AsyncIterator[TransportPair]:
    a_to_b, b_to_a = f"{unique_name}.a-to-b", f"{unique_name}.b-to-a"
    raw_a = await _end(kafka_bootstrap, unique_name, "a", a_to_b, b_to_a).start()
    raw_b = await _end(kafka_bootstrap, unique_name, "b", b_to_a, a_to_b).start()
    producer = raw_a._producer
    assert producer is not None

    async def inject(raw: bytes) -> None:
        await producer.send_and_wait(a_to_b, raw, key=raw_a.config.client_id.encode())

    wrap = WRAPS[request.param]
    a, b = wrap(raw_a), wrap(raw_b)
    try:
        yield TransportPair(a, b, inject)
    finally:
        await a.close()
        await b.close()
