"""W3C Trace Context (``traceparent`` / ``tracestate``): strict parsing, nothing else.

A trace context arrives from outside - an HTTP header, an MCP request's
``params._meta`` (SEP-414), a broker header - and travels in the
:class:`~transports.envelope.Envelope`. Whatever arrives is checked here against the
W3C grammar; what fails is ignored (the request goes on and a new trace starts where
tracing is on), never an error: a caller's broken tracing must not break its call.

``traceparent`` is ``version-traceid-parentid-flags``: lowercase hex of 2, 32, 16 and 2
digits; version ``ff``, an all-zero trace id and an all-zero parent id are invalid. A
version above ``00`` is read as W3C asks (its first four fields, and nothing but a
``-`` may follow them) and is always written back as version ``00``. ``tracestate`` is
kept only beside a valid ``traceparent`` and only when it fits W3C's list grammar
(at most 32 members, at most 512 characters); else it is dropped alone.

Every check runs in time linear in the input and refuses inputs past the limits first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_TRACESTATE_CHARS", "TraceContext", "parse_tracestate"]

MAX_TRACESTATE_CHARS: Final = 512
_MAX_TRACESTATE_MEMBERS: Final = 32
_TRACEPARENT_V00_CHARS: Final = 55
# A later version may append fields; no reason to read a header much longer than ours.
_MAX_TRACEPARENT_CHARS: Final = 256
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE_ID: Final = "0" * 32
_ZERO_SPAN_ID: Final = "0" * 16
_LCALPHA: Final = frozenset("abcdefghijklmnopqrstuvwxyz")
_KEY_FIRST: Final = _LCALPHA | frozenset("0123456789")
_KEY_REST: Final = _KEY_FIRST | frozenset("_-*/")
# Printable ASCII except ',' and '=' (W3C: chr(0x20) to chr(0x7E) minus those two).
_VALUE_CHARS: Final = frozenset(chr(c) for c in range(0x20, 0x7F)) - {",", "="}


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A valid W3C trace context: ids as lowercase hex, as on the wire.

    Attributes:
        trace_id: 32 hex digits, not all zero.
        span_id: 16 hex digits, not all zero: the caller's span (the parent of ours).
        flags: the trace flags byte (bit 0: sampled).
        tracestate: the vendor list, already checked, or None.
    """

    trace_id: str
    span_id: str
    flags: int
    tracestate: str | None = None

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` value (always version ``00``)."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)

    @classmethod
    def parse(cls, traceparent: object, tracestate: object = None) -> TraceContext | None:
        """The context these two values carry, or None when ``traceparent`` is invalid.

        Non-string values (a ``_meta`` entry may hold any JSON) count as absent.
        """
        if not isinstance(traceparent, str):
            return None
        length = len(traceparent)
        if length < _TRACEPARENT_V00_CHARS or length > _MAX_TRACEPARENT_CHARS:
            return None
        # A fixed-width pattern on a bounded string: no backtracking to speak of.
        fields = _TRACEPARENT.match(traceparent)
        if fields is None:
            return None
        version, trace_id, span_id, flags = fields.groups()
        if version == "ff" or (version == "00" and length != _TRACEPARENT_V00_CHARS):
            return None
        if length > _TRACEPARENT_V00_CHARS and traceparent[_TRACEPARENT_V00_CHARS] != "-":
            return None
        if trace_id == _ZERO_TRACE_ID or span_id == _ZERO_SPAN_ID:
            return None
        return cls(trace_id, span_id, int(flags, 16), parse_tracestate(tracestate))

    @classmethod
    def from_carrier(cls, carrier: Mapping[str, object] | None) -> TraceContext | None:
        """Read ``traceparent`` / ``tracestate`` from a dict (``_meta``, broker headers)."""
        if not carrier:
            return None
        traceparent = carrier.get("traceparent")
        if traceparent is None:
            return None
        return cls.parse(traceparent, carrier.get("tracestate"))


def parse_tracestate(tracestate: object) -> str | None:
    """``tracestate`` as given when it fits W3C's list grammar, else None.

    Empty members (``a=1,,b=2``) and spaces around them are allowed, as W3C allows them;
    duplicate keys are not.
    """
    if not isinstance(tracestate, str) or not tracestate or len(tracestate) > MAX_TRACESTATE_CHARS:
        return None
    members = tracestate.split(",")
    if len(members) > _MAX_TRACESTATE_MEMBERS:
        return None
    keys: set[str] = set()
    for member in members:
        member = member.strip(" \t")
        if not member:
            continue
        key, equals, value = member.partition("=")
        if not equals or not _valid_key(key) or not _valid_value(value) or key in keys:
            return None
        keys.add(key)
    return tracestate if keys else None


def _valid_key(key: str) -> bool:
    # simple-key: lcalpha then up to 255 of lcalpha, digit, _-*/; or tenant@system:
    # tenant (lcalpha or digit first) up to 241, system (lcalpha first) up to 14.
    tenant, at, system = key.partition("@")
    if not at:
        return 0 < len(key) <= 256 and key[0] in _LCALPHA and _KEY_REST.issuperset(key)
    return (
        0 < len(tenant) <= 241
        and tenant[0] in _KEY_FIRST
        and _KEY_REST.issuperset(tenant)
        and 0 < len(system) <= 14
        and system[0] in _LCALPHA
        and _KEY_REST.issuperset(system)
    )


def _valid_value(value: str) -> bool:
    return 0 < len(value) <= 256 and _VALUE_CHARS.issuperset(value)
