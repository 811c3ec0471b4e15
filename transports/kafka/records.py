"""Kafka record headers <-> envelopes, and where an undecodable record goes.

A record whose headers or body do not decode is answered or dead-lettered so its
partition always moves on (see :mod:`transports.kafka.transport`): if it carries a
``raybus-reply-to`` header naming a topic that is not one of the receiver's, the sender
gets a JSON-RPC error Response there (with the record's envelope); otherwise the raw
bytes and headers go to the dead-letter topic with ``raybus-dlq-error`` and
``raybus-dlq-source`` headers.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from transports.codec import encode_message, error_response_for
from transports.envelope import Envelope
from transports.errors import INVALID_REQUEST, BusError, InvalidMessage, InvalidRequest
from transports.message import Response

__all__ = ["ENVELOPE_MARKER", "Disposal", "dispose_of_undecodable", "header_list", "headers_of"]

ENVELOPE_MARKER = "raybus-client-id"  # Envelope.to_headers always writes it
_DLQ_DETAIL_CHARS = 1000


def headers_of(record: Any) -> dict[str, str]:
    """A record's headers as text; a header that is not UTF-8 makes the record invalid."""
    headers: dict[str, str] = {}
    for name, value in record.headers or ():
        try:
            headers[name] = bytes(value or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"header {name} is not UTF-8") from None
    return headers


def header_list(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(name, value.encode("utf-8")) for name, value in headers.items()]


@dataclass(frozen=True)
class Disposal:
    """What to produce for an undecodable record: an error reply, or a dead letter.

    ``envelope`` is the sender's (a reply is keyed by it); None for a dead letter, which
    keeps the record's own key.
    """

    topic: str
    value: bytes
    headers: list[tuple[str, bytes]]
    envelope: Envelope | None
    source: str  # topic/partition/offset, for the log

    @property
    def is_reply(self) -> bool:
        return self.envelope is not None


def dispose_of_undecodable(
    record: Any, error: BusError, receive_topics: Collection[str], dead_letter_topic: str
) -> Disposal:
    """Where the undecodable ``record`` goes (see the module doc), and with what."""
    try:
        headers = headers_of(record)
        envelope = Envelope.from_headers(headers) if ENVELOPE_MARKER in headers else None
    except InvalidMessage:
        envelope = None
    source = f"{record.topic}/{record.partition}/{record.offset}"
    reply_to = envelope.reply_to if envelope is not None else None
    if envelope is not None and reply_to and reply_to not in receive_topics:
        if isinstance(error, InvalidMessage):
            answer = error_response_for(error)
        else:
            answer = Response.failure(
                None, INVALID_REQUEST, "Invalid Request", {"detail": str(error)}
            )
        return Disposal(
            reply_to, encode_message(answer), header_list(envelope.to_headers()), envelope, source
        )
    dead_letter_headers = [
        *((name, bytes(value or b"")) for name, value in record.headers or ()),
        ("raybus-dlq-error", str(error)[:_DLQ_DETAIL_CHARS].encode("utf-8")),
        ("raybus-dlq-source", source.encode("utf-8")),
    ]
    value = record.value if record.value is not None else b""
    return Disposal(dead_letter_topic, value, dead_letter_headers, None, source)
