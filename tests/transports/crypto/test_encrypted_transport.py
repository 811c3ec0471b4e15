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

from tests.transports.crypto.helpers import encrypted_ends, inner_limits, rings
from tests.transports.test_codec_properties import messages
from transports.codec import DecodeLimits
from transports.crypto.keyring import KeyExhausted, Keyring
from transports.crypto.seal import SealRejected
from transports.envelope import Envelope
from transports.errors import ConnectionClosed
from transports.memory import MemoryTransport
from transports.message import Request, Response, TransportMessage

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
    """Clients keep calling while keys rotate k1 -> k2 -> k3 -> k4 on both sides.

    Each rotation: add the new key everywhere, promote it everywhere, and retire the old
    one once every message sealed under it has arrived (the pair is FIFO per sender: an
    answer to a call made after the promotion proves it).
    """
    inner_a, inner_b = MemoryTransport.pair(limits=inner_limits(LIMITS), max_queued=64)
    ring_a, ring_b = rings("k1")
    client, worker = encrypted_ends(inner_a, inner_b, ring_a, ring_b, limits=LIMITS)
    callers, calls_each = 8, 150
    answered: dict[int, asyncio.Future[Response]] = {}
    failures: list[BaseException] = []
    progress = asyncio.Condition()
    done_calls = 0

    async def serve() -> None:
        while True:
            delivery = await worker.receive()
            request = delivery.message
            assert isinstance(request, Request)
            await worker.send(Response.success(request.id, {"echo": request.params}))

    async def listen() -> None:
        nonlocal done_calls
        while True:
            try:
                delivery = await client.receive()
            except SealRejected as exc:
                failures.append(exc)
                continue
            response = delivery.message
            assert isinstance(response, Response)
            assert isinstance(response.id, int)
            answered.pop(response.id).set_result(response)
            async with progress:
                done_calls += 1
                progress.notify_all()

    async def caller(index: int) -> None:
        for n in range(calls_each):
            call_id = index * calls_each + n
            future = asyncio.get_running_loop().create_future()
            answered[call_id] = future
            try:
                await client.send(Request(id=call_id, method="tools/call", params={"n": n}))
            except Exception as exc:
                failures.append(exc)
                raise
            response = await future
            assert response.result == {"echo": {"n": n}}

    async def wait_for_calls(count: int) -> None:
        async with progress:
            await progress.wait_for(lambda: done_calls >= count)

    async def rotate() -> list[str]:
        used = []
        for old, new in (("k1", "k2"), ("k2", "k3"), ("k3", "k4")):
            await wait_for_calls(done_calls + 100)
            key = os.urandom(32)
            ring_a.add(new, key)
            ring_b.add(new, key)
            ring_a.promote(new)
            ring_b.promote(new)
            # Every caller has at most one call in flight: 2 * callers more answers mean
            # calls sealed under ``new`` came back, so nothing under ``old`` is in flight.
            await wait_for_calls(done_calls + 2 * callers)
            ring_a.retire(old)
            ring_b.retire(old)
            used.append(new)
        return used

    server = asyncio.create_task(serve())
    listener = asyncio.create_task(listen())
    async with asyncio.timeout(BOUND_S * 2):
        rotations = asyncio.create_task(rotate())
        await asyncio.gather(*(caller(i) for i in range(callers)))
        assert await rotations == ["k2", "k3", "k4"]
    server.cancel()
    listener.cancel()
    await asyncio.gather(server, listener, return_exceptions=True)
    assert failures == []
    assert done_calls == callers * calls_each
    assert ring_a.key_ids() == ring_b.key_ids() == ["k4"]
    assert ring_a.sealed_count("k4") > 0


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
