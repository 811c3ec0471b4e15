"""The shared transport contract with EncryptedTransport around the in-memory pair."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.transports.crypto.helpers import encrypted_memory_pair
from tests.transports.pairs import TransportPair
from tests.transports.test_contract import *  # noqa: F403 - the whole suite, again


# Overrides the suite's parametrized ``pair`` (imported above) for this module.
@pytest.fixture  # type: ignore[no-redef]
async def pair() -> AsyncIterator[TransportPair]:
    async with encrypted_memory_pair() as connected:
        yield connected
