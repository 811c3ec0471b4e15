"""Sealed messages open only unchanged, at their destination, in their direction, once."""

from __future__ import annotations

import base64
import dataclasses
import os
import random
import struct
from typing import Any

import pytest

from transports.base import Delivery
from transports.crypto.keyring import Keyring
from transports.crypto.seal import (
    SEALED_METHOD,
    Direction,
    Sealer,
    SealRejected,
    open_sealed,
)
from transports.crypto.transport import SealedChannel
from transports.envelope import Envelope
from transports.errors import ParseError
from transports.message import Notification, Request, TransportMessage

ENVELOPE = Envelope(
    client_id="client-7",
    request_id="r-42",
    principal="alice",
    reply_to="bus.mcp.responses.client-7",
    deadline_unix_s=1_900_000_000.25,
    traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    tracestate="vendor=secret-ish",
    idempotency_key="idem-1",
    method="tools/call",
    name="transfer_funds",
    attributes=(("tenant", "acme"),),
)
BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"transfer_funds"}}'
DEST = "bus.mcp.requests.pay"


def _ring() -> Keyring:
    return Keyring.of({"k1": os.urandom(32)}, "k1")


def _open(ring: Keyring, message: TransportMessage, envelope: Envelope | None) -> Any:
    return open_sealed(
        ring,
        message,
        envelope,
        direction=Direction.TO_WORKER,
        destinations=frozenset({DEST}),
    )


def test_a_sealed_message_opens_to_its_body_and_whole_envelope() -> None:
    ring = _ring()
    sealed, clear = Sealer(ring, "gw", Direction.TO_WORKER).seal(BODY, ENVELOPE, DEST)
    opened = _open(ring, sealed, clear)
    assert opened.body == BODY
    assert opened.envelope == ENVELOPE


def test_the_readable_part_holds_no_tool_name_argument_or_sealed_field() -> None:
    ring = _ring()
    sealed, clear = Sealer(ring, "gw", Direction.TO_WORKER).seal(BODY, ENVELOPE, DEST)
    assert clear is not None
    readable = repr(sealed) + repr(clear.to_headers())
    for secret in ("transfer_funds", "tools/call", "acme", "idem-1", "secret-ish"):
        assert secret not in readable
    assert clear.correlation_key == ENVELOPE.correlation_key
    assert clear.reply_to == ENVELOPE.reply_to


def _flip_text(text: str, rng: random.Random) -> str:
    raw = bytearray(text.encode("latin-1"))
    raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    return raw.decode("latin-1")


def _flip_bytes_b64(text: str, rng: random.Random, part: slice = slice(None)) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[rng.choice(range(len(raw))[part])] ^= 1 << rng.randrange(8)
    return base64.b64encode(bytes(raw)).decode()


def _mutations(
    params: dict[str, Any], clear: Envelope, rng: random.Random
) -> tuple[str, dict[str, Any], Envelope]:
    kind = rng.choice(["nonce", "ciphertext", "tag", "kid", "sid", "seq", "dir", "dst", "envelope"])
    changed = dict(params)
    envelope = clear
    if kind == "nonce":
        changed["nonce"] = _flip_bytes_b64(params["nonce"], rng)
    elif kind == "ciphertext":
        changed["ct"] = _flip_bytes_b64(params["ct"], rng, slice(None, -16))
    elif kind == "tag":
        changed["ct"] = _flip_bytes_b64(params["ct"], rng, slice(-16, None))
    elif kind == "seq":
        changed["seq"] = params["seq"] ^ (1 << rng.randrange(62))
    elif kind == "envelope":
        field = rng.choice(
            ["client_id", "request_id", "principal", "reply_to", "traceparent", "deadline_unix_s"]
        )
        new: Any
        if field == "deadline_unix_s":
            assert clear.deadline_unix_s is not None
            bits = struct.unpack("<Q", struct.pack("<d", clear.deadline_unix_s))[0]
            flipped = struct.pack("<Q", bits ^ (1 << rng.randrange(64)))
            new = struct.unpack("<d", flipped)[0]
        else:
            new = _flip_text(str(getattr(clear, field)), rng)
        envelope = dataclasses.replace(clear, **{field: new})
    else:
        changed[kind] = _flip_text(params[kind], rng)
    return kind, changed, envelope


def test_ten_thousand_single_bit_flips_in_nonce_ciphertext_tag_or_header_are_rejected() -> None:
    ring = _ring()
    sealed, clear = Sealer(ring, "gw", Direction.TO_WORKER).seal(BODY, ENVELOPE, DEST)
    assert isinstance(sealed, Notification)
    assert isinstance(sealed.params, dict)
    assert clear is not None
    rng = random.Random(20)
    seen_kinds: dict[str, int] = {}
    for _ in range(10_000):
        kind, params, envelope = _mutations(sealed.params, clear, rng)
        seen_kinds[kind] = seen_kinds.get(kind, 0) + 1
        with pytest.raises(SealRejected) as rejected:
            _open(ring, Notification(method=SEALED_METHOD, params=params), envelope)
        assert str(rejected.value) == "sealed message rejected (JSON-RPC -32600)"
    assert len(seen_kinds) == 9
    assert min(seen_kinds.values()) > 900
    assert _open(ring, sealed, clear).body == BODY  # the original still opens


def test_a_moved_a_reflected_and_a_retired_key_message_fail_alike() -> None:
    ring = _ring()
    sealed, clear = Sealer(ring, "gw", Direction.TO_WORKER).seal(BODY, ENVELOPE, DEST)
    reasons = []
    for direction, destinations in (
        (Direction.TO_WORKER, frozenset({"bus.mcp.requests.other"})),  # moved
        (Direction.TO_CLIENT, frozenset({DEST})),  # reflected to the other side
    ):
        with pytest.raises(SealRejected) as rejected:
            open_sealed(ring, sealed, clear, direction=direction, destinations=destinations)
        reasons.append(str(rejected.value))
    ring.add("k2", os.urandom(32))
    ring.promote("k2")
    ring.retire("k1")
    with pytest.raises(SealRejected) as rejected:
        _open(ring, sealed, clear)
    reasons.append(str(rejected.value))
    with pytest.raises(SealRejected) as rejected:
        _open(ring, Request(id=1, method="tools/call"), clear)  # not sealed at all
    reasons.append(str(rejected.value))
    assert len(set(reasons)) == 1


def test_a_message_under_another_bus_key_with_the_same_id_is_rejected() -> None:
    sealed, clear = Sealer(_ring(), "gw", Direction.TO_WORKER).seal(BODY, ENVELOPE, DEST)
    with pytest.raises(SealRejected):
        _open(_ring(), sealed, clear)


def _delivery(message: TransportMessage, envelope: Envelope | None, log: list[str]) -> Delivery:
    async def ack() -> None:
        log.append("ack")

    async def nack() -> None:
        log.append("nack")

    return Delivery(message, envelope, 0, ack, nack)


def _channels() -> tuple[SealedChannel, SealedChannel]:
    ring = _ring()
    sender = SealedChannel(ring, sender="gw", sends=Direction.TO_WORKER)
    receiver = SealedChannel(ring, sender="worker", sends=Direction.TO_CLIENT)
    return sender, receiver


async def test_an_exact_replay_is_rejected_and_dropped_from_the_broker() -> None:
    sender, receiver = _channels()
    sealed, clear = sender.seal(BODY, ENVELOPE, DEST)
    log: list[str] = []
    first = await receiver.open(_delivery(sealed, clear, log), frozenset({DEST}), redelivers=True)
    await first.ack()
    with pytest.raises(SealRejected):
        await receiver.open(_delivery(sealed, clear, log), frozenset({DEST}), redelivers=True)
    assert log == ["ack", "ack"]  # the replay was acknowledged: it never comes back


async def test_a_nacked_message_is_accepted_when_the_broker_redelivers_it() -> None:
    sender, receiver = _channels()
    sealed, clear = sender.seal(BODY, ENVELOPE, DEST)
    log: list[str] = []
    first = await receiver.open(_delivery(sealed, clear, log), frozenset({DEST}), redelivers=True)
    with pytest.raises(SealRejected):  # a second copy while the first is in progress
        await receiver.open(_delivery(sealed, clear, log), frozenset({DEST}), redelivers=True)
    await first.nack()
    again = await receiver.open(_delivery(sealed, clear, log), frozenset({DEST}), redelivers=True)
    assert again.envelope == ENVELOPE
    await again.ack()
    assert log == ["ack", "nack", "ack"]


async def test_reordering_inside_the_window_is_accepted_once_and_too_old_is_rejected() -> None:
    ring = _ring()
    sender = SealedChannel(ring, sender="gw", sends=Direction.TO_WORKER)
    receiver = SealedChannel(ring, sender="w", sends=Direction.TO_CLIENT, replay_window=64)
    sealed = [sender.seal(BODY, ENVELOPE, DEST) for _ in range(70)]
    for index in (4, 0, 2, 1, 3, 69):
        message, clear = sealed[index]
        await receiver.open(_delivery(message, clear, []), frozenset({DEST}), redelivers=False)
    for index in (2, 5):  # 2 was accepted; 5 is 64 below 69: out of the window
        message, clear = sealed[index]
        with pytest.raises(SealRejected):
            await receiver.open(_delivery(message, clear, []), frozenset({DEST}), redelivers=False)
    message, clear = sealed[6]  # 63 below: still in the window
    await receiver.open(_delivery(message, clear, []), frozenset({DEST}), redelivers=False)


async def test_a_restarted_sender_is_a_new_sender_to_its_receivers() -> None:
    ring = _ring()
    receiver = SealedChannel(ring, sender="w", sends=Direction.TO_CLIENT)
    for _ in range(2):  # the same name twice: a process and its restart
        sender = SealedChannel(ring, sender="gw", sends=Direction.TO_WORKER)
        message, clear = sender.seal(BODY, ENVELOPE, DEST)
        opened = await receiver.open(
            _delivery(message, clear, []), frozenset({DEST}), redelivers=False
        )
        assert opened.envelope == ENVELOPE


async def test_an_authentic_but_malformed_body_raises_the_codec_error() -> None:
    sender, receiver = _channels()
    message, clear = sender.seal(b"{not json", ENVELOPE, DEST)
    log: list[str] = []
    with pytest.raises(ParseError):
        await receiver.open(_delivery(message, clear, log), frozenset({DEST}), redelivers=True)
    assert log == ["ack"]
