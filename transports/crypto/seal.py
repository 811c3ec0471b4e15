"""The sealed wire format: what is encrypted, what stays readable, what is bound.

A sealed message is itself a JSON-RPC notification, so every transport carries it
unchanged (brokers decode bodies as JSON-RPC)::

    {"jsonrpc": "2.0", "method": "raybus/sealed",
     "params": {"v": 1, "kid": "k1", "sid": "<sender>.<epoch>", "seq": 17,
                "dir": "to-worker", "dst": "<topic or queue>",
                "nonce": "<12 bytes, base64>", "ct": "<ciphertext + 16-byte tag, base64>"}}

Sealed (inside ``ct``): the whole JSON-RPC body (method, tool name, arguments, result,
error, progress) and the envelope fields ``method``, ``name`` (the tool, prompt or
resource), ``tracestate``, ``idempotency_key`` and ``attributes``.

Left readable, because the broker or the receiving edge needs them before opening:
the envelope's ``client_id``, ``request_id``, ``principal`` (the correlation key, which
is also the Kafka record key), ``reply_to`` (where the answer goes), ``deadline_unix_s``
and ``traceparent`` (random trace/span ids), plus the header above.

Associated data (authenticated, not encrypted) is the header above without the nonce and
ciphertext, plus every readable envelope field: changing any of them, moving the message
to another destination, replaying it in the other direction or under another sender or
sequence number makes opening fail. Every failure raises the one :class:`SealRejected`,
whose text never says which check failed, and releases no plaintext.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidTag

from transports.crypto.keyring import Keyring
from transports.envelope import Envelope
from transports.errors import InvalidRequest
from transports.message import Notification, TransportMessage

__all__ = [
    "NONCE_BYTES",
    "SEALED_METHOD",
    "Direction",
    "Opened",
    "SealRejected",
    "Sealer",
    "open_sealed",
    "sealed_overhead_bytes",
]

SEALED_METHOD = "raybus/sealed"
NONCE_BYTES = 12
_VERSION = 1
_TAG_BYTES = 16
_SENDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,127}$")
_HEADER_KEYS = frozenset({"v", "kid", "sid", "seq", "dir", "dst", "nonce", "ct"})
_MAX_SEQ = 2**63 - 1
_REJECTED = "sealed message rejected"


class SealRejected(InvalidRequest):
    """A sealed message did not open. Deliberately the same for every reason."""

    def __init__(self, detail: str = _REJECTED) -> None:
        super().__init__(detail)


class Direction(StrEnum):
    """Which way a message goes: bound in the associated data, so a message cannot be
    reflected back to its sender's side."""

    TO_WORKER = "to-worker"
    TO_CLIENT = "to-client"

    @property
    def opposite(self) -> Direction:
        return Direction.TO_CLIENT if self is Direction.TO_WORKER else Direction.TO_WORKER


def _clear_part(envelope: Envelope | None) -> Envelope | None:
    if envelope is None:
        return None
    return Envelope(
        client_id=envelope.client_id,
        request_id=envelope.request_id,
        principal=envelope.principal,
        reply_to=envelope.reply_to,
        deadline_unix_s=envelope.deadline_unix_s,
        traceparent=envelope.traceparent,
    )


def _sealed_part(envelope: Envelope | None) -> dict[str, Any] | None:
    if envelope is None:
        return None
    part: dict[str, Any] = {"at": [list(pair) for pair in envelope.attributes]}
    for key, value in (
        ("m", envelope.method),
        ("n", envelope.name),
        ("ts", envelope.tracestate),
        ("ik", envelope.idempotency_key),
    ):
        if value is not None:
            part[key] = value
    return part


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("ascii")


def _associated_data(header: dict[str, Any], clear: Envelope | None) -> bytes:
    # A JSON list: unambiguous field boundaries; the envelope's headers come in the
    # fixed order Envelope.to_headers writes them on both sides.
    bound = [header[k] for k in ("v", "kid", "sid", "seq", "dir", "dst")]
    bound.append(None if clear is None else list(clear.to_headers().items()))
    return _compact(bound)


def sealed_overhead_bytes(plaintext_bytes: int) -> int:
    """An upper bound of a sealed message's size for a body of ``plaintext_bytes``
    (base64 expansion, tag, header, and up to 4 KiB of sealed envelope fields)."""
    return (plaintext_bytes + 4096 + _TAG_BYTES + 2) // 3 * 4 + 1024 - plaintext_bytes


class Sealer:
    """Seals one sender's messages: a fresh random nonce and the next sequence number each.

    ``sender`` names the process (a client or worker id); a random epoch is appended so
    a restarted sender, whose numbers start at 0 again, is a new sender to receivers.
    """

    def __init__(self, keyring: Keyring, sender: str, direction: Direction) -> None:
        if not _SENDER.match(sender):
            raise ValueError(f"sender id {sender!r} must match {_SENDER.pattern}")
        self._keyring = keyring
        self.sender_id = f"{sender}.{secrets.token_hex(8)}"
        self.direction = direction
        self._next_seq = 0

    def seal(
        self, body: bytes, envelope: Envelope | None, destination: str
    ) -> tuple[Notification, Envelope | None]:
        """The sealed message and the envelope to send beside it (readable fields only).

        Raises:
            KeyExhausted: the keyring refuses to seal (its key is at the message cap).
        """
        key_id, aead = self._keyring.sealing_key()
        seq = self._next_seq
        self._next_seq += 1
        clear = _clear_part(envelope)
        header: dict[str, Any] = {
            "v": _VERSION,
            "kid": key_id,
            "sid": self.sender_id,
            "seq": seq,
            "dir": self.direction.value,
            "dst": destination,
        }
        nonce = os.urandom(NONCE_BYTES)
        plaintext = _compact(_sealed_part(envelope)) + b"\n" + body
        sealed = aead.encrypt(nonce, plaintext, _associated_data(header, clear))
        header["nonce"] = base64.b64encode(nonce).decode("ascii")
        header["ct"] = base64.b64encode(sealed).decode("ascii")
        return Notification(method=SEALED_METHOD, params=header), clear


@dataclass(frozen=True, slots=True)
class Opened:
    """An authentic message: its body, its whole envelope, and who sent it as which."""

    body: bytes
    envelope: Envelope | None
    sender_id: str
    seq: int


def _header_of(message: TransportMessage) -> dict[str, Any]:
    if not isinstance(message, Notification) or message.method != SEALED_METHOD:
        raise SealRejected
    params = message.params
    if not isinstance(params, dict) or set(params) != _HEADER_KEYS:
        raise SealRejected
    typed = (
        params["v"] == _VERSION
        and all(isinstance(params[k], str) for k in ("kid", "sid", "dir", "dst", "nonce", "ct"))
        and type(params["seq"]) is int
        and 0 <= params["seq"] <= _MAX_SEQ
    )
    if not typed:
        raise SealRejected
    return params


def _restored(clear: Envelope | None, sealed_part: Any) -> Envelope | None:
    if clear is None:
        if sealed_part is not None:
            raise SealRejected
        return None
    if not isinstance(sealed_part, dict):
        raise SealRejected
    pairs = sealed_part.get("at", [])
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in pairs
    ):
        raise SealRejected
    texts = {k: sealed_part.get(k) for k in ("m", "n", "ts", "ik")}
    if not all(v is None or isinstance(v, str) for v in texts.values()):
        raise SealRejected
    return Envelope(
        client_id=clear.client_id,
        request_id=clear.request_id,
        principal=clear.principal,
        reply_to=clear.reply_to,
        deadline_unix_s=clear.deadline_unix_s,
        traceparent=clear.traceparent,
        tracestate=texts["ts"],
        idempotency_key=texts["ik"],
        method=texts["m"],
        name=texts["n"],
        attributes=tuple((a, b) for a, b in pairs),
    )


def open_sealed(
    keyring: Keyring,
    message: TransportMessage,
    envelope: Envelope | None,
    *,
    direction: Direction,
    destinations: frozenset[str],
) -> Opened:
    """Authenticate and decrypt one sealed message (replay is the caller's check).

    Raises:
        SealRejected: for every reason (not sealed, malformed, unknown or retired key,
            wrong direction or destination, any changed byte, any changed readable field).
    """
    header = _header_of(message)
    aead = keyring.opening_key(header["kid"])
    if aead is None or header["dir"] != direction.value or header["dst"] not in destinations:
        raise SealRejected
    try:
        nonce = base64.b64decode(header["nonce"], validate=True)
        sealed = base64.b64decode(header["ct"], validate=True)
    except (binascii.Error, ValueError):
        raise SealRejected from None
    canonical = (
        base64.b64encode(nonce).decode("ascii") == header["nonce"]
        and base64.b64encode(sealed).decode("ascii") == header["ct"]
    )
    # Base64 ignores the spare low bits of its last character: without this check a
    # flipped spare bit would open as the same message.
    if not canonical or len(nonce) != NONCE_BYTES or len(sealed) < _TAG_BYTES:
        raise SealRejected
    clear = _clear_part(envelope)
    try:
        plaintext = aead.decrypt(nonce, sealed, _associated_data(header, clear))
    except InvalidTag:
        raise SealRejected from None
    meta, separator, body = plaintext.partition(b"\n")
    if not separator:
        raise SealRejected
    try:
        sealed_part = json.loads(meta)
    except ValueError:
        raise SealRejected from None
    return Opened(body, _restored(clear, sealed_part), header["sid"], header["seq"])
