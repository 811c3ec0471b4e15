"""Encrypted memory pairs for the crypto tests and the contract suite."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.transports.pairs import CONTRACT_LIMITS, TransportPair
from transports.base import Transport
from transports.codec import DecodeLimits, encode_message
from transports.crypto.keyring import Keyring
from transports.crypto.seal import Direction, Sealer, sealed_overhead_bytes
from transports.crypto.transport import EncryptedTransport
from transports.memory import MemoryTransport
from transports.message import Request, Response

A_TO_B = "a-to-b"
B_TO_A = "b-to-a"


def rings(*key_ids: str) -> tuple[Keyring, Keyring]:
    """Two keyrings holding the same keys, sealing with the first id."""
    keys = {key_id: os.urandom(32) for key_id in key_ids or ("k1",)}
    current = next(iter(keys))
    return Keyring.of(keys, current), Keyring.of(keys, current)


def encrypted_ends(
    inner_a: Transport,
    inner_b: Transport,
    ring_a: Keyring,
    ring_b: Keyring,
    limits: DecodeLimits = CONTRACT_LIMITS,
    *,
    a_to_b: str = A_TO_B,
    b_to_a: str = B_TO_A,
) -> tuple[EncryptedTransport, EncryptedTransport]:
    """A client end ``a`` (sends to workers on ``a_to_b``) and a worker end ``b``."""

    def end(inner: Transport, ring: Keyring, sender: str, sends: Direction) -> EncryptedTransport:
        outbound, inbound = (a_to_b, b_to_a) if sends is Direction.TO_WORKER else (b_to_a, a_to_b)
        return EncryptedTransport(
            inner,
            ring,
            sender_id=sender,
            sends=sends,
            send_to=outbound,
            receive_as=(inbound,),
            limits=limits,
        )

    return (
        end(inner_a, ring_a, "client-a", Direction.TO_WORKER),
        end(inner_b, ring_b, "worker-b", Direction.TO_CLIENT),
    )


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


async def rotate_three_times_under_load(
    client: EncryptedTransport,
    worker: EncryptedTransport,
    ring_client: Keyring,
    ring_worker: Keyring,
    *,
    callers: int = 8,
    calls_each: int = 150,
) -> None:
    """Callers keep calling while keys rotate k1 -> k2 -> k3 -> k4 on both sides; every
    call must be answered and nothing may fail to open.

    Each rotation: add the new key everywhere, promote it everywhere, and retire the old
    one once every message sealed under it has arrived (each direction is FIFO per
    sender: answers to calls made after the promotion prove it).
    """
    answered: dict[int, asyncio.Future[Response]] = {}
    failures: list[BaseException] = []
    progress = asyncio.Condition()
    done_calls = 0

    async def serve() -> None:
        while True:
            try:
                delivery = await worker.receive()
            except Exception as exc:
                failures.append(exc)
                continue
            request = delivery.message
            assert isinstance(request, Request)
            await worker.send(Response.success(request.id, {"echo": request.params}))
            await delivery.ack()

    async def listen() -> None:
        nonlocal done_calls
        while True:
            try:
                delivery = await client.receive()
            except Exception as exc:
                failures.append(exc)
                continue
            await delivery.ack()
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
            # Held here: under load the answer can arrive (and leave ``answered``) before
            # the broker has acknowledged the send and ``send`` returns.
            answer = answered[call_id] = asyncio.get_running_loop().create_future()
            await client.send(Request(id=call_id, method="tools/call", params={"n": n}))
            response = await answer
            assert response.result == {"echo": {"n": n}}

    async def wait_for_calls(count: int) -> None:
        async with progress:
            await progress.wait_for(lambda: done_calls >= count)

    async def rotate() -> list[str]:
        used = []
        for old, new in (("k1", "k2"), ("k2", "k3"), ("k3", "k4")):
            await wait_for_calls(done_calls + 100)
            key = os.urandom(32)
            ring_client.add(new, key)
            ring_worker.add(new, key)
            ring_client.promote(new)
            ring_worker.promote(new)
            # Every caller has at most one call in flight: 2 * callers more answers mean
            # calls sealed under ``new`` came back, so nothing under ``old`` is in flight.
            await wait_for_calls(done_calls + 2 * callers)
            ring_client.retire(old)
            ring_worker.retire(old)
            used.append(new)
        return used

    server = asyncio.create_task(serve())
    listener = asyncio.create_task(listen())
    try:
        rotations = asyncio.create_task(rotate())
        await asyncio.gather(*(caller(i) for i in range(callers)))
        assert await rotations == ["k2", "k3", "k4"]
    finally:
        server.cancel()
        listener.cancel()
        await asyncio.gather(server, listener, return_exceptions=True)
    assert failures == []
    assert done_calls == callers * calls_each
    assert ring_client.key_ids() == ring_worker.key_ids() == ["k4"]
    assert ring_client.sealed_count("k4") > 0
