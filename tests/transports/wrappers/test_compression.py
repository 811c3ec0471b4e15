"""CompressionTransport: marked frames, mixed traffic, and the decompression cap."""

from __future__ import annotations

import asyncio
import base64
import os
import pickle
from collections.abc import AsyncIterator

import pytest
import zstandard

from tests.transports.pairs import CONTRACT_LIMITS
from transports.base import Delivery, Transport
from transports.errors import InvalidMessage, MessageTooLarge
from transports.memory import MemoryTransport
from transports.message import Notification, Request
from transports.wrappers.compression import CompressionTransport, DecompressedTooLarge

CAP = CONTRACT_LIMITS.max_message_bytes
BOUND_S = 60.0


async def within(transport: Transport) -> Delivery:
    async with asyncio.timeout(BOUND_S):
        return await transport.receive()


@pytest.fixture
async def ends() -> AsyncIterator[tuple[MemoryTransport, MemoryTransport]]:
    raw_a, raw_b = MemoryTransport.pair(limits=CONTRACT_LIMITS)
    yield raw_a, raw_b
    await raw_a.close()
    await raw_b.close()


def zstd_frame(message: Notification) -> Notification:
    return Notification(method="rpc.raybus.zstd", params=message.params)


async def test_large_messages_travel_compressed_and_small_ones_unchanged(
    ends: tuple[MemoryTransport, MemoryTransport],
) -> None:
    raw_a, raw_b = ends
    sender = CompressionTransport(raw_a, threshold_bytes=512)
    small = Request(id=1, method="tools/call", params={"name": "add"})
    large = Request(id=2, method="tools/call", params={"text": "all work and no play " * 200})
    await sender.send(small)
    await sender.send(large)
    assert (await within(raw_b)).message == small  # a peer without the wrapper reads it
    on_the_wire = (await within(raw_b)).message
    assert isinstance(on_the_wire, Notification)
    assert on_the_wire.method == "rpc.raybus.zstd"
    assert isinstance(on_the_wire.params, dict)
    assert len(on_the_wire.params["z"]) < len(str(large.params)) // 4


async def test_mixed_compressed_and_plain_traffic_is_read_in_order(
    ends: tuple[MemoryTransport, MemoryTransport],
) -> None:
    raw_a, raw_b = ends
    sender = CompressionTransport(raw_a, threshold_bytes=256)
    receiver = CompressionTransport(raw_b)
    sent = [
        Notification(method="n", params={"i": i, "pad": "z" * (i * 97 % 900)}) for i in range(40)
    ]
    sent.insert(5, Notification(method="plain peer"))
    for message in sent:
        if message.method == "plain peer":
            await raw_a.send(message)  # a sender without the wrapper, mid-stream
        else:
            await sender.send(message)
    received = [(await within(receiver)).message for _ in sent]
    assert received == sent


async def test_incompressible_messages_above_the_threshold_travel_unchanged(
    ends: tuple[MemoryTransport, MemoryTransport],
) -> None:
    raw_a, raw_b = ends
    noise = base64.b64encode(os.urandom(3000)).decode()
    message = Notification(method="noise", params={"blob": noise})
    await CompressionTransport(raw_a, threshold_bytes=100).send(message)
    assert (await within(raw_b)).message == message


async def test_a_send_over_the_cap_is_refused_even_if_it_would_compress_below_it(
    ends: tuple[MemoryTransport, MemoryTransport],
) -> None:
    raw_a, _ = ends
    sender = CompressionTransport(raw_a)
    with pytest.raises(MessageTooLarge):
        await sender.send(Notification(method="big", params={"x": "x" * CAP}))
    assert sender.capabilities.max_message_bytes == CAP


def bomb(decompressed_bytes: int, *, announce_size: bool) -> str:
    """A small frame of zeros that expands to ``decompressed_bytes``."""
    compressor = zstandard.ZstdCompressor(level=3, write_content_size=announce_size)
    if announce_size:
        return base64.b64encode(compressor.compress(bytes(decompressed_bytes))).decode()
    # Streamed in, so the frame header does not say how large the content is.
    chunker = compressor.chunker(chunk_size=1 << 20)
    megabyte = bytes(1 << 20)
    chunks = [c for _ in range(decompressed_bytes >> 20) for c in chunker.compress(megabyte)]
    tail = chunker.finish()  # type: ignore[no-untyped-call]  # zstandard's stub misses it
    return base64.b64encode(b"".join([*chunks, *tail])).decode()


@pytest.mark.parametrize("announce_size", [False, True])
async def test_a_compression_bomb_is_rejected_at_the_cap_and_the_next_message_arrives(
    ends: tuple[MemoryTransport, MemoryTransport], announce_size: bool
) -> None:
    raw_a, raw_b = ends
    receiver = CompressionTransport(raw_b)
    expands_to = 64 * 1024 * 1024  # 1024 times the cap, from a frame of a few kB
    packed = bomb(expands_to, announce_size=announce_size)
    assert len(packed) < CAP
    await raw_a.send(Notification(method="rpc.raybus.zstd", params={"v": 1, "z": packed}))
    with pytest.raises(DecompressedTooLarge) as refused:
        await within(receiver)
    # Stopped at the cap (one byte past it), or refused from the header before starting.
    assert refused.value.size_bytes == (expands_to if announce_size else CAP + 1)
    assert f"limit of {CAP} bytes" in str(refused.value)
    assert isinstance(refused.value, MessageTooLarge)  # callers that know only the tree
    assert pickle.loads(pickle.dumps(refused.value)).max_bytes == CAP
    await CompressionTransport(raw_a, threshold_bytes=0).send(Notification(method="after"))
    assert (await within(receiver)).message == Notification(method="after")


async def test_a_frame_just_at_the_cap_is_accepted(
    ends: tuple[MemoryTransport, MemoryTransport],
) -> None:
    raw_a, raw_b = ends
    skeleton = len(b'{"jsonrpc":"2.0","method":"m","params":{"x":""}}')
    exact = Notification(method="m", params={"x": "y" * (CAP - skeleton)})
    await CompressionTransport(raw_a).send(exact)
    assert (await within(CompressionTransport(raw_b))).message == exact


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"v": 1, "z": "not base64!"}, "not valid base64"),
        ({"v": 1, "z": base64.b64encode(b"not zstd at all").decode()}, "not a zstd frame"),
        ({"v": 1, "z": 7}, "base64 string"),
        ({"v": 2, "z": ""}, "version 2 is not supported"),
        (
            {"v": 1, "z": base64.b64encode(zstandard.compress(b"{not json")).decode()},
            "Expecting property name",
        ),
    ],
)
async def test_a_bad_compressed_frame_is_refused_clearly_and_the_transport_keeps_working(
    ends: tuple[MemoryTransport, MemoryTransport], params: dict[str, object], detail: str
) -> None:
    raw_a, raw_b = ends
    receiver = CompressionTransport(raw_b)
    await raw_a.send(Notification(method="rpc.raybus.zstd", params=params))
    with pytest.raises(InvalidMessage, match=detail):
        await within(receiver)
    await raw_a.send(Notification(method="after"))
    assert (await within(receiver)).message == Notification(method="after")
