"""The shared transport contract with EncryptedTransport around a real Kafka pair."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.transports.crypto.helpers import (
    encrypted_ends,
    inner_limits,
    rings,
    rotate_three_times_under_load,
)
from tests.transports.kafka_pairs import kafka_ends
from tests.transports.pairs import TransportPair
from tests.transports.test_contract import *  # noqa: F403 - the whole suite, again
from tests.transports.test_contract import BULK_BOUND_S
from transports.codec import encode_message
from transports.crypto.seal import Direction, Sealer
from transports.crypto.transport import EncryptedTransport

pytestmark = pytest.mark.kafka


# Overrides the suite's parametrized ``pair`` (imported above) for this module.
@pytest.fixture  # type: ignore[no-redef]
async def pair(kafka_bootstrap: str, unique_name: str) -> AsyncIterator[TransportPair]:
    room = inner_limits().max_message_bytes  # the sealed form of the largest plaintext
    async with kafka_ends(kafka_bootstrap, unique_name, max_message_bytes=room) as ends:
        ring_a, ring_b = rings("k1")
        a, b = encrypted_ends(
            ends.a, ends.b, ring_a, ring_b, a_to_b=ends.a_to_b, b_to_a=ends.b_to_a
        )
        injector = Sealer(ring_a, "injector", Direction.TO_WORKER)

        async def inject(raw: bytes) -> None:
            # Sealed by a legitimate sender, straight to the broker: no sending-side check.
            sealed, _ = injector.seal(raw, None, ends.a_to_b)
            await ends.inject(encode_message(sealed))

        yield TransportPair(a, b, inject)


async def test_three_key_rotations_under_load_on_kafka_fail_no_call(pair: TransportPair) -> None:
    client, worker = pair.a, pair.b
    assert isinstance(client, EncryptedTransport)
    assert isinstance(worker, EncryptedTransport)
    async with asyncio.timeout(BULK_BOUND_S):
        await rotate_three_times_under_load(
            client, worker, client.channel.keyring, worker.channel.keyring, calls_each=60
        )
