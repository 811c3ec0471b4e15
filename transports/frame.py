"""The unit that crosses actor boundaries: an envelope plus an encoded JSON-RPC body.

Hops between actors move batches of frames (``list[Frame]``) per call; only the edges
(gateway, client, worker) decode bodies. Routers read the envelope and never the body.
"""

from __future__ import annotations

from dataclasses import dataclass

from transports.codec import DEFAULT_LIMITS, DecodeLimits, decode_message, encode_message
from transports.envelope import Envelope
from transports.message import TransportMessage

__all__ = ["Frame"]


@dataclass(frozen=True, slots=True)
class Frame:
    envelope: Envelope
    body: bytes

    def __reduce__(self) -> tuple[type[Frame], tuple[Envelope, bytes]]:
        # Every hop pickles frames by the batch: the constructor loads them fastest.
        return (type(self), (self.envelope, self.body))

    @classmethod
    def of(cls, envelope: Envelope, message: TransportMessage) -> Frame:
        return cls(envelope, encode_message(message))

    def decode(self, limits: DecodeLimits = DEFAULT_LIMITS) -> TransportMessage:
        """The JSON-RPC message in the body (raises the codec's documented errors)."""
        return decode_message(self.body, limits)
