"""EncryptedTransport end to end over the in-memory pair: round trips, rotation, caps."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.transports.crypto.helpers import (
    encrypted_ends,
    inner_limits,
    rings,
    rotate_three_times_under_load,
)
from tests.transports.test_codec_properties import messages
from transports.codec import DecodeLimits
from transports.crypto.keyring import KeyExhausted, Keyring
from transports.envelope import Envelope
from transports.errors import ConnectionClosed
from transports.memory import MemoryTransport
from transports.message import Request, TransportMessage

BOUND_S = 60.0  # a hung test's bound, not a speed assertion

texts = st.text(max_size=30)
envelopes = st.none() | st.builds(
    Envelope,
    client_id=texts,
    request_id=texts,
    principal=texts,
    reply_to=st.none() | texts,
    deadline_unix_s=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    traceparent=st.none() | texts,
    tracestate=st.none() | texts,
    idempotency_key=st.none() | texts,
    method=st.none() | texts,
    name=st.none() | texts,
    attributes=st.lists(st.tuples(texts, texts), max_size=3).map(lambda p: tuple(sorted(p))),
)
LIMITS = DecodeLimits()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=messages(), envelope=envelopes)
async def test_every_message_and_envelope_round_trip_both_ways(
    message: TransportMessage, envelope: Envelope | None
) -> None:
    inner_a, inner_b = MemoryTransport.pair(limits=inner_limits(LIMITS))
    a, b = encrypted_ends(inner_a, inner_b, *rings("k1"), limits=LIMITS)
    async with asyncio.timeout(BOUND_S):
        await a.send(message, envelope)
        delivered = await b.receive()
        assert (delivered.message, delivered.envelope) == (message, envelope)
        await b.send(message, envelope)
        delivered = await a.receive()
        assert (delivered.message, delivered.envelope) == (message, envelope)
    await a.close()
    await b.close()


async def test_three_key_rotations_under_load_fail_no_call() -> None:
    inner_a, inner_b = MemoryTransport.pair(limits=inner_limits(LIMITS), max_queued=64)
    ring_a, ring_b = rings("k1")
    client, worker = encrypted_ends(inner_a, inner_b, ring_a, ring_b, limits=LIMITS)
    async with asyncio.timeout(BOUND_S * 2):
        await rotate_three_times_under_load(client, worker, ring_a, ring_b)


async def test_sending_past_the_key_cap_raises_a_clear_error_and_sends_nothing() -> None:
    key = os.urandom(32)
    inner_a, inner_b = MemoryTransport.pair(limits=inner_limits(LIMITS))
    ring_a = Keyring.of({"k1": key}, "k1", max_messages_per_key=2)
    a, b = encrypted_ends(inner_a, inner_b, ring_a, Keyring.of({"k1": key}, "k1"), limits=LIMITS)
    for n in range(2):
        await a.send(Request(id=n, method="m"))
    with pytest.raises(KeyExhausted, match="add and promote a new key"):
        await a.send(Request(id=3, method="m"))
    async with asyncio.timeout(BOUND_S):
        assert [(await b.receive()).message for _ in range(2)] == [
            Request(id=0, method="m"),
            Request(id=1, method="m"),
        ]
    await inner_a.close()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(b.receive(), BOUND_S)


_NONCES_SCRIPT = textwrap.dedent(
    """
    import base64, sys
    from transports.crypto.keyring import Keyring
    from transports.crypto.seal import Direction, Sealer
    ring = Keyring.of({"k1": bytes(range(32))}, "k1", max_messages_per_key=2**31)
    sealer = Sealer(ring, "restarting-sender", Direction.TO_WORKER)
    out = sys.stdout.buffer
    for _ in range(int(sys.argv[1])):
        sealed, _clear = sealer.seal(b"{}", None, "d")
        out.write(base64.b64decode(sealed.params["nonce"]))
    """
)


@pytest.mark.slow
def test_no_key_and_nonce_pair_repeats_over_a_million_messages_across_restarts() -> None:
    """Four processes (a sender and three restarts) seal 250,000 messages each under the
    same key; every nonce in the sealed messages is collected and none repeats."""
    restarts, per_process = 4, 250_000
    nonces: set[bytes] = set()
    for _ in range(restarts):
        produced = subprocess.run(
            [sys.executable, "-c", _NONCES_SCRIPT, str(per_process)],
            capture_output=True,
            check=True,
            timeout=900,
        ).stdout
        assert len(produced) == per_process * 12
        nonces.update(produced[i : i + 12] for i in range(0, len(produced), 12))
    assert len(nonces) == restarts * per_process
