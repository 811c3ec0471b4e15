"""The shared transport contract over a real Kafka broker, with each wrapper around it.

The Kafka pair is :func:`tests.transports.kafka_pairs.kafka_ends` (its own topics and
groups per test); ``inject`` still produces raw records straight to the broker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.transports.kafka_pairs import kafka_ends
from tests.transports.pairs import TransportPair
from tests.transports.test_contract import *  # noqa: F403 - the whole suite, again
from tests.transports.wrappers.wrapping import WRAPS

pytestmark = pytest.mark.kafka


# Overrides the suite's parametrized ``pair`` (imported above) for this module.
@pytest.fixture(params=sorted(WRAPS))  # type: ignore[no-redef]
async def pair(
    request: pytest.FixtureRequest, kafka_bootstrap: str, unique_name: str
) -> AsyncIterator[TransportPair]:
    async with kafka_ends(kafka_bootstrap, unique_name) as ends:
        wrap = WRAPS[request.param]
        a, b = wrap(ends.a), wrap(ends.b)
        try:
            yield TransportPair(a, b, ends.inject)
        finally:
            await a.close()
            await b.close()
