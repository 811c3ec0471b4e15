"""Property tests: every wrapper, and every stack of them, is an identity on the traffic.

Messages and envelopes of any shape go in one end and come out of the other unchanged,
in order per route (what the contract promises: batching keeps the order of each route,
not across routes). Arbitrary frames raise only the documented errors.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.transports.test_codec_properties import json_values, messages
from transports.base import Transport
from transports.envelope import Envelope
from transports.errors import InvalidMessage, MessageTooLarge
from transports.memory import MemoryTransport
from transports.message import Notification, TransportMessage
from transports.wrappers.batching import BatchingTransport
from transports.wrappers.compression import CompressionTransport
from transports.wrappers.logging import LoggingTransport
from transports.wrappers.retry import RetryTransport

BOUND_S = 60.0

LAYERS: dict[str, Callable[[Transport], Transport]] = {
    "batching": lambda inner: BatchingTransport(inner, max_batch_messages=4, linger_s=0.001),
    "compression": lambda inner: CompressionTransport(inner, threshold_bytes=0),
    "logging": lambda inner: LoggingTransport(inner, log_payloads=True),
    "retry": lambda inner: RetryTransport(inner),
}

short_text = st.text(max_size=12)
envelopes = st.builds(
    Envelope,
    client_id=st.sampled_from(["c1", "c2"]),
    request_id=st.sampled_from(["r1", "r2", "r3"]),
    principal=st.text(min_size=1, max_size=12),
    reply_to=st.none() | st.sampled_from(["replies", ""]),
    deadline_unix_s=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    traceparent=st.none() | short_text,
    idempotency_key=st.none() | short_text,
    method=st.none() | short_text,
    name=st.none() | short_text,
    attributes=st.dictionaries(
        st.text(alphabet="abcdefgh-", min_size=1, max_size=6), short_text, max_size=3
    ).map(lambda pairs: tuple(sorted(pairs.items()))),
)
traffic = st.lists(st.tuples(messages(), st.none() | envelopes), min_size=1, max_size=12)
stacks = st.lists(st.sampled_from(sorted(LAYERS)), min_size=1, max_size=4, unique=True)

Route = tuple[str | None, tuple[str, str, str]] | None


def by_route(
    items: list[tuple[TransportMessage, Envelope | None]],
) -> dict[Route, list[tuple[TransportMessage, Envelope | None]]]:
    routes: dict[Route, list[tuple[TransportMessage, Envelope | None]]] = {}
    for message, envelope in items:
        route = None if envelope is None else (envelope.reply_to, envelope.correlation_key)
        routes.setdefault(route, []).append((message, envelope))
    return routes


def wrap(stack: list[str], inner: Transport) -> Transport:
    for layer in reversed(stack):  # stack[0] ends up outermost
        inner = LAYERS[layer](inner)
    return inner


async def round_trip(
    stack: list[str], sent: list[tuple[TransportMessage, Envelope | None]]
) -> list[tuple[TransportMessage, Envelope | None]]:
    raw_a, raw_b = MemoryTransport.pair()
    a, b = wrap(stack, raw_a), wrap(stack, raw_b)
    async with asyncio.timeout(BOUND_S):
        await asyncio.gather(*(a.send(message, envelope) for message, envelope in sent))
        deliveries = [await b.receive() for _ in sent]
    await a.close()
    await b.close()
    return [(delivery.message, delivery.envelope) for delivery in deliveries]


@settings(max_examples=60, deadline=None)
@given(stacks, traffic)
def test_every_stack_of_wrappers_delivers_what_was_sent_in_order_per_route(
    stack: list[str], sent: list[tuple[TransportMessage, Envelope | None]]
) -> None:
    received = asyncio.run(round_trip(stack, sent))
    assert by_route(received) == by_route(sent)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(sorted(LAYERS)), traffic)
def test_each_wrapper_alone_delivers_what_was_sent(
    layer: str, sent: list[tuple[TransportMessage, Envelope | None]]
) -> None:
    received = asyncio.run(round_trip([layer], sent))
    assert by_route(received) == by_route(sent)


async def receive_one(frame: Notification, layer: str) -> None:
    raw_a, raw_b = MemoryTransport.pair()
    receiver = LAYERS[layer](raw_b)
    await raw_a.send(frame)
    with contextlib.suppress(InvalidMessage, MessageTooLarge):
        async with asyncio.timeout(BOUND_S):
            await receiver.receive()


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300) | st.builds(lambda v: str(v).encode(), json_values))
def test_arbitrary_compressed_frames_raise_only_documented_errors(data: bytes) -> None:
    frame = Notification(
        method="rpc.raybus.zstd", params={"v": 1, "z": base64.b64encode(data).decode()}
    )
    asyncio.run(receive_one(frame, "compression"))


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_arbitrary_batch_frames_raise_only_documented_errors(items: Any) -> None:
    frame = Notification(method="rpc.raybus.batch", params={"v": 1, "items": items})
    asyncio.run(receive_one(frame, "batching"))
