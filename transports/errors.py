"""The raybus error tree.

Every error raybus raises derives from :class:`BusError`::

    BusError                         retriable   meaning
    ├── TransportError
    │   ├── ConnectionClosed            yes      the pipe is gone; a new connection may work
    │   ├── MessageTooLarge             no       over the transport's or peer's size cap
    │   └── EnvelopeNotSupported        no       this transport cannot carry routing data
    ├── InvalidMessage                  no       bad input; carries the JSON-RPC error to answer
    │   ├── ParseError      (-32700)             not JSON, not UTF-8, too deep, duplicate keys
    │   └── InvalidRequest  (-32600)             JSON, but not a JSON-RPC 2.0 message we accept
    ├── PolicyError                     no       refused by the gateway's policy chain
    ├── RoutingError                    yes      no pool or worker can take the request now
    └── BusTimeout                      yes      a deadline passed before an outcome

``retriable`` is a class attribute so breakers and retry loops read it instead of keeping
``isinstance`` lists. It says whether repeating the *operation* may succeed; whether it is
*safe* to repeat (idempotency) is the caller's decision.

Every class pickles: Ray ships exceptions between processes, so each constructor passes
all of its arguments to ``super().__init__`` and the message is formatted in ``__str__``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "BusError",
    "BusErrorCode",
    "BusTimeout",
    "ConnectionClosed",
    "EnvelopeNotSupported",
    "InvalidMessage",
    "InvalidRequest",
    "MessageTooLarge",
    "ParseError",
    "PolicyError",
    "RoutingError",
    "TransportError",
]

# JSON-RPC 2.0 reserved codes (spec section 5.1).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

JSONRPCId = str | int


class BusErrorCode:
    """raybus's own JSON-RPC error codes, outside the reserved -32768..-32000 range."""

    DEADLINE_EXCEEDED = 1001
    OVERLOADED = 1002
    CIRCUIT_OPEN = 1003
    OUTCOME_UNKNOWN = 1004  # the worker was lost after the call may have started
    CANCELLED = 1005
    SHUTTING_DOWN = 1006
    UPSTREAM_FAILED = 1007  # the hosted server failed (crashed, unreachable)


class BusError(Exception):
    """Root of every error raybus raises."""

    retriable: bool = False


class TransportError(BusError):
    """The transport could not move a message."""


class ConnectionClosed(TransportError):
    """The transport (or its peer) is closed; nothing more can be sent or received."""

    retriable = True

    def __init__(self, reason: str = "connection closed") -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class MessageTooLarge(TransportError):
    """A message is over the size a transport or peer accepts; it was not sent or kept."""

    def __init__(self, size_bytes: int, max_bytes: int) -> None:
        super().__init__(size_bytes, max_bytes)
        self.size_bytes = size_bytes
        self.max_bytes = max_bytes

    def __str__(self) -> str:
        return f"message of {self.size_bytes} bytes is over the limit of {self.max_bytes} bytes"


class EnvelopeNotSupported(TransportError):
    """Routing data was given to a transport that carries only the JSON-RPC body.

    Dropping an envelope silently could deliver a response to the wrong caller, so the
    transport refuses instead.
    """

    def __init__(self, transport_type: str) -> None:
        super().__init__(transport_type)
        self.transport_type = transport_type

    def __str__(self) -> str:
        return f"the {self.transport_type} transport carries no envelope"


class InvalidMessage(BusError):
    """Input that is not an acceptable JSON-RPC 2.0 message.

    Carries what a peer needs to answer: the JSON-RPC ``code``, a human ``detail`` and the
    request ``id`` when one could be read (``None`` otherwise, as the spec requires).
    """

    code: int = INVALID_REQUEST

    def __init__(self, detail: str, request_id: JSONRPCId | None = None) -> None:
        super().__init__(detail, request_id)
        self.detail = detail
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.detail} (JSON-RPC {self.code})"

    def error_object(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` member to send back for this input."""
        message = "Parse error" if self.code == PARSE_ERROR else "Invalid Request"
        return {"code": self.code, "message": message, "data": {"detail": self.detail}}


class ParseError(InvalidMessage):
    """Not parseable as JSON we accept (JSON-RPC -32700)."""

    code = PARSE_ERROR


class InvalidRequest(InvalidMessage):
    """Valid JSON but not a valid JSON-RPC 2.0 message (JSON-RPC -32600)."""

    code = INVALID_REQUEST


class PolicyError(BusError):
    """The gateway's policy chain refused the request (auth, limits, schema)."""

    def __init__(self, detail: str, policy: str) -> None:
        super().__init__(detail, policy)
        self.detail = detail
        self.policy = policy

    def __str__(self) -> str:
        return f"{self.policy}: {self.detail}"


class RoutingError(BusError):
    """No pool or worker can take the request now (unknown tool, breaker open, full)."""

    retriable = True

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


class BusTimeout(BusError):
    """A deadline passed before the operation reached an outcome."""

    retriable = True

    def __init__(self, operation: str, timeout_s: float) -> None:
        super().__init__(operation, timeout_s)
        self.operation = operation
        self.timeout_s = timeout_s

    def __str__(self) -> str:
        return f"{self.operation} did not finish within {self.timeout_s:g} s"
