"""Encrypted memory pairs for the crypto tests and the contract suite."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.transports.pairs import CONTRACT_LIMITS, TransportPair
from transports.codec import DecodeLimits, encode_message
from transports.crypto.keyring import Keyring
from transports.crypto.seal import Direction, Sealer, sealed_overhead_bytes
from transports.crypto.transport import EncryptedTransport
from transports.memory import MemoryTransport

A_TO_B = "a-to-b"
B_TO_A = "b-to-a"


def rings(*key_ids: str) -> tuple[Keyring, Keyring]:
    """Two keyrings holding the same keys, sealing with the first id."""
    keys = {key_id: os.urandom(32) for key_id in key_ids or ("k1",)}
    current = next(iter(keys))
    return Keyring.of(keys, current), Keyring.of(keys, current)


def encrypted_ends(
    inner_a: MemoryTransport,
    inner_b: MemoryTransport,
    ring_a: Keyring,
    ring_b: Keyring,
    limits: DecodeLimits = CONTRACT_LIMITS,
) -> tuple[EncryptedTransport, EncryptedTransport]:
    a = EncryptedTransport(
        inner_a,
        ring_a,
        sender_id="client-a",
        sends=Direction.TO_WORKER,
        send_to=A_TO_B,
        receive_as=(B_TO_A,),
        limits=limits,
    )
    b = EncryptedTransport(
        inner_b,
        ring_b,
        sender_id="worker-b",
        sends=Direction.TO_CLIENT,
        send_to=B_TO_A,
        receive_as=(A_TO_B,),
        limits=limits,
    )
    return a, b


def inner_limits(limits: DecodeLimits = CONTRACT_LIMITS) -> DecodeLimits:
    """Room for the sealed form of the largest plaintext (and the contract's oversize one)."""
    plaintext = limits.max_message_bytes + 1024
    return DecodeLimits(max_message_bytes=plaintext + sealed_overhead_bytes(plaintext))


@asynccontextmanager
async def encrypted_memory_pair() -> AsyncIterator[TransportPair]:
    inner_a, inner_b = MemoryTransport.pair(limits=inner_limits())
    ring_a, ring_b = rings("k1")
    a, b = encrypted_ends(inner_a, inner_b, ring_a, ring_b)
    # ``inject``: raw bytes sealed by a legitimate sender (past every sending-side check),
    # so the receiving side's plaintext checks are what the suite exercises.
    injector = Sealer(ring_a, "injector", Direction.TO_WORKER)

    async def inject(raw: bytes) -> None:
        sealed, _ = injector.seal(raw, None, A_TO_B)
        await inner_a._outbound.put((encode_message(sealed), None))

    try:
        yield TransportPair(a, b, inject)
    finally:
        await a.close()
        await b.close()
