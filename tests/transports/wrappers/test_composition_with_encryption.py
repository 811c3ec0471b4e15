"""The wrappers composed with ``EncryptedTransport`` (issue 20 part 1, built beside them).

Skipped where ``transports.crypto`` is not in the tree yet; it runs once both are merged.
Both orders are exercised: the issue's ``EncryptedTransport(CompressionTransport(...))``
and compression outside encryption (the order that actually shrinks messages).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest

from transports.base import Delivery, Transport
from transports.memory import MemoryTransport
from transports.message import Request, TransportMessage
from transports.wrappers.batching import BatchingTransport
from transports.wrappers.compression import CompressionTransport
from transports.wrappers.delegate import TransportWrapper
from transports.wrappers.logging import LoggingTransport
from transports.wrappers.retry import RetryTransport

crypto: Any = pytest.importorskip("transports.crypto.transport")
keyring: Any = pytest.importorskip("transports.crypto.keyring")
seal: Any = pytest.importorskip("transports.crypto.seal")

BOUND_S = 60.0
SECRET_ARGUMENT = "account-number-0042-7311"


class Tap(TransportWrapper):
    """Records every message as it arrives off the wire, before any wrapper reads it."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.seen: list[TransportMessage] = []

    async def receive(self) -> Delivery:
        delivery = await self._inner.receive()
        self.seen.append(delivery.message)
        return delivery


Encrypt = Callable[[Transport], Transport]


def encryptors() -> tuple[Encrypt, Encrypt]:
    keys = {"k1": os.urandom(32)}

    def end(sender: str, sends: Any, send_to: str, receive_as: str) -> Encrypt:
        ring = keyring.Keyring.of(keys, "k1")
        return lambda inner: crypto.EncryptedTransport(
            inner,
            ring,
            sender_id=sender,
            sends=sends,
            send_to=send_to,
            receive_as=(receive_as,),
        )

    direction = seal.Direction
    return (
        end("client", direction.TO_WORKER, "a-to-b", "b-to-a"),
        end("worker", direction.TO_CLIENT, "b-to-a", "a-to-b"),
    )


def encryption_outside(encrypt: Encrypt, wire: Transport) -> Transport:
    return LoggingTransport(
        encrypt(CompressionTransport(BatchingTransport(RetryTransport(wire)), threshold_bytes=64))
    )


def compression_outside(encrypt: Encrypt, wire: Transport) -> Transport:
    return LoggingTransport(
        CompressionTransport(encrypt(BatchingTransport(RetryTransport(wire))), threshold_bytes=64)
    )


@pytest.mark.parametrize("stack", [encryption_outside, compression_outside])
async def test_encryption_composes_with_all_four_wrappers_and_hides_the_arguments(
    stack: Callable[[Encrypt, Transport], Transport],
) -> None:
    raw_a, raw_b = MemoryTransport.pair()
    tap = Tap(raw_b)
    encrypt_a, encrypt_b = encryptors()
    a, b = stack(encrypt_a, raw_a), stack(encrypt_b, tap)
    sent = [
        Request(
            id=i,
            method="tools/call",
            params={"name": "lookup", "arguments": {"account": SECRET_ARGUMENT, "pad": "x" * i}},
        )
        for i in range(0, 2000, 100)
    ]
    async with asyncio.timeout(BOUND_S):
        await asyncio.gather(*(a.send(message) for message in sent))
        received = [(await b.receive()).message for _ in sent]
        await b.send(Request(id="back", method="ping"))
        answer = (await a.receive()).message
    assert received == sent
    assert answer == Request(id="back", method="ping")
    assert tap.seen  # the wire was observed
    assert not [frame for frame in tap.seen if SECRET_ARGUMENT in str(frame.to_json_dict())]
    assert not [frame for frame in tap.seen if "lookup" in str(frame.to_json_dict())]
    await a.close()
    await b.close()
