"""The raybus error tree.

Every error raybus raises derives from :class:`BusError`::

    BusError                         retriable   meaning
    ├── TransportError
    │   ├── ConnectionClosed            yes      the pipe is gone; a new connection may work
    │   │   └── FramesNotSent           yes      these frames of a batch were not handed over
    │   ├── DeliveryUnconfirmed         no       handed over, never confirmed: may be delivered
    │   ├── MessageTooLarge             no       over the transport's or peer's size cap
    │   └── EnvelopeNotSupported        no       this transport cannot carry routing data
    ├── InvalidMessage                  no       bad input; carries the JSON-RPC error to answer
    │   ├── ParseError      (-32700)             not JSON, not UTF-8, too deep, duplicate keys
    │   └── InvalidRequest  (-32600)             JSON, but not a JSON-RPC 2.0 message we accept
    ├── CallError                       no       a call ended with a JSON-RPC error (code)
    └── BusTimeout                      yes      a deadline passed before an outcome

A refusal or failure that reaches a caller travels as a JSON-RPC error: the reserved
codes below, or one of raybus's own :class:`BusErrorCode` values, which stay outside the
reserved -32768..-32000 range. ``CallError`` is how a Python caller (``BusClient``)
receives either kind.

``retriable`` is a class attribute so breakers and retry loops read it instead of keeping
``isinstance`` lists. It says whether repeating the *operation* may succeed; whether it is
*safe* to repeat (idempotency) is the caller's decision.

Every class pickles: Ray ships exceptions between processes, so each constructor passes
all of its arguments to ``super().__init__`` and the message is formatted in ``__str__``.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # message imports nothing from here; the type is for CallError.of only
    from transports.message import ErrorObject

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "MISSING_REQUIRED_CLIENT_CAPABILITY",
    "PARSE_ERROR",
    "BusError",
    "BusErrorCode",
    "BusTimeout",
    "CallError",
    "ConnectionClosed",
    "DeliveryUnconfirmed",
    "EnvelopeNotSupported",
    "FramesNotSent",
    "InvalidMessage",
    "InvalidRequest",
    "MessageTooLarge",
    "ParseError",
    "TransportError",
]

# JSON-RPC 2.0 reserved codes (spec section 5.1).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# MCP 2026-07-28 (schema.ts): the request needs a capability the client did not declare;
# raybus answers it for a synchronous call of a tool that runs only as a task.
MISSING_REQUIRED_CLIENT_CAPABILITY = -32021

JSONRPCId = str | int


class BusErrorCode(IntEnum):
    """raybus's own JSON-RPC error codes, outside the reserved -32768..-32000 range.

    The one table of them: README lists the same, and nothing defines a code elsewhere.
    """

    DEADLINE_EXCEEDED = 1001  # the call's deadline (caller's or the pool's) passed
    OVERLOADED = 1002  # the pool's queue is full; data.retryAfterSeconds hints when
    CIRCUIT_OPEN = 1003  # the pool keeps failing; its breaker refuses calls for a while
    OUTCOME_UNKNOWN = 1004  # the worker was lost after the call may have started
    CANCELLED = 1005
    SHUTTING_DOWN = 1006  # the worker or bus is draining
    UPSTREAM_FAILED = 1007  # the hosted server failed (crashed, unreachable)
    RATE_LIMITED = 1008  # over a token bucket of the gateway; data.retryAfterSeconds
    FORBIDDEN = 1009  # the principal may not use this tool, prompt or resource
    # No pool of the request's region may serve it, and router.regions.failover allows no
    # other: the bus refuses rather than cross the boundary. data: {region, tool, reason}.
    REGION_REFUSED = 1010
    # An idempotency key came back with other arguments than its first call's: refused
    # without running (README "Idempotency keys").
    IDEMPOTENCY_KEY_REUSED = 1011


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


class FramesNotSent(ConnectionClosed):
    """Some frames of a batch never reached the backend; the batch's others did.

    A batch is not all-or-nothing on a broker: records queued before a failure may still
    be delivered. So a sender that fails part of a batch names the frames (by correlation
    key) that certainly did not go, and a caller fails only those; the others keep
    waiting for their answers.
    """

    def __init__(self, reason: str, keys: frozenset[tuple[str, str, str]]) -> None:
        super().__init__(reason)
        self.args = (reason, keys)
        self.keys = keys


class DeliveryUnconfirmed(TransportError):
    """A message was handed to the backend, which then failed to confirm it.

    It may still be delivered (a broker that wrote a record and lost the connection
    before acknowledging it; an aiokafka batch given up after a request that reached the
    broker), so its sender must not say "not sent": a request is "may have run".
    """

    def __init__(self, reason: str) -> None:
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


class CallError(BusError):
    """A call ended with a JSON-RPC error, from the server or from the bus.

    ``code`` is a reserved JSON-RPC code or a :class:`BusErrorCode`; ``data`` is the
    error's ``data`` member as sent.
    """

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(method, code, message, data)
        self.method = method
        self.code = code
        self.message = message
        self.data = data

    def __str__(self) -> str:
        return f"{self.method} failed with {self.code}: {self.message}"

    @classmethod
    def of(cls, method: str, error: ErrorObject) -> CallError:
        return cls(method, error.code, error.message, error.data)


class BusTimeout(BusError):
    """A deadline passed before the operation reached an outcome."""

    retriable = True

    def __init__(self, operation: str, timeout_s: float) -> None:
        super().__init__(operation, timeout_s)
        self.operation = operation
        self.timeout_s = timeout_s

    def __str__(self) -> str:
        return f"{self.operation} did not finish within {self.timeout_s:g} s"
