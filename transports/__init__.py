"""raybus transports: JSON-RPC messages, the Transport protocol, pipes and wrappers.

This package never imports Ray: it is the layer every other one stands on.
"""

from transports.base import Delivery, Transport, TransportCapabilities, TransportType
from transports.codec import DecodeLimits, decode_message, encode_message, error_response_for
from transports.envelope import Envelope
from transports.errors import (
    BusError,
    BusTimeout,
    ConnectionClosed,
    InvalidMessage,
    InvalidRequest,
    MessageTooLarge,
    ParseError,
)
from transports.message import ErrorObject, Notification, Request, Response, TransportMessage

__all__ = [
    "BusError",
    "BusTimeout",
    "ConnectionClosed",
    "DecodeLimits",
    "Delivery",
    "Envelope",
    "ErrorObject",
    "InvalidMessage",
    "InvalidRequest",
    "MessageTooLarge",
    "Notification",
    "ParseError",
    "Request",
    "Response",
    "Transport",
    "TransportCapabilities",
    "TransportMessage",
    "TransportType",
    "decode_message",
    "encode_message",
    "error_response_for",
]
