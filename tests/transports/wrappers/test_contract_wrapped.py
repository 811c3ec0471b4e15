"""The shared transport contract, run whole with each wrapper around the in-memory pair."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.transports.pairs import TransportPair, memory_pair
from tests.transports.test_contract import *  # noqa: F403 - the whole suite, again
from tests.transports.wrappers.wrapping import WRAPS, wrapped


# Overrides the suite's parametrized ``pair`` (imported above) for this module.
@pytest.fixture(params=sorted(WRAPS))  # type: ignore[no-redef]
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[TransportPair]:
    async with wrapped(memory_pair, WRAPS[request.param]) as connected:
        yield connected
