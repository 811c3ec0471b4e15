"""The shared transport contract over a real Kafka broker.

Every test of ``test_contract`` runs here again with ``pair`` overridden: ``a`` produces to
one topic that ``b`` consumes and back, each in its own consumer group. Assertions that
cannot hold for a broker (a peer's close) are decided by the declared capabilities.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.transports.kafka_pairs import kafka_ends
from tests.transports.pairs import TransportPair
from tests.transports.test_contract import *  # noqa: F403 - the whole suite, again

pytestmark = pytest.mark.kafka


# Overrides the suite's parametrized ``pair`` (imported above) for this module.
@pytest.fixture  # type: ignore[no-redef]
async def pair(kafka_bootstrap: str, unique_name: str) -> AsyncIterator[TransportPair]:
    async with kafka_ends(kafka_bootstrap, unique_name) as ends:
        yield TransportPair(ends.a, ends.b, ends.inject)
