"""Routing data that travels beside a JSON-RPC body, never inside it.

JSON-RPC ids are unique per sender only, so every component correlates on
:attr:`Envelope.correlation_key` = ``(principal, client_id, request_id)``. Brokers carry
the envelope as record headers / message attributes (:meth:`Envelope.to_headers`), Ray as
a pickled object beside the body bytes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from typing import Self

from transports.errors import InvalidRequest

__all__ = ["ANONYMOUS", "CorrelationKey", "Envelope"]

ANONYMOUS = "anonymous"
CorrelationKey = tuple[str, str, str]

_HEADER_PREFIX = "raybus-"
_MAX_HEADER_VALUE_CHARS = 1024


@dataclass(frozen=True, slots=True)
class Envelope:
    """Where a message comes from, where its answer goes, and until when it matters.

    Attributes:
        client_id: the connection or session the message belongs to (gateway-assigned).
        request_id: unique per client; for requests, the bus's own id for the call (the
            JSON-RPC id may repeat across clients and is kept in the body untouched).
        principal: the authenticated identity; never a credential.
        reply_to: where responses go (a response topic, queue or actor name).
        deadline_unix_s: wall-clock deadline, seconds since the epoch; None = no deadline.
        traceparent / tracestate: W3C trace context, as received; whoever reads it
            checks it (:mod:`transports.tracecontext`) and ignores it when invalid.
        idempotency_key: lets a ledger recognise a redelivered call.
        method / name: the JSON-RPC method and the tool, prompt or resource it names
            (MCP's Mcp-Method / Mcp-Name), read once at the edge so routers never
            decode a body to route it.
        attributes: extra string pairs a wrapper needs (sorted, hashable).
    """

    client_id: str = ""
    request_id: str = ""
    principal: str = ANONYMOUS
    reply_to: str | None = None
    deadline_unix_s: float | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    idempotency_key: str | None = None
    method: str | None = None
    name: str | None = None
    attributes: tuple[tuple[str, str], ...] = field(default=())

    def __reduce__(self) -> tuple[type[Envelope], tuple[object, ...]]:
        # Ray pickles every envelope on every hop: loading by the constructor is ~3x
        # cheaper than the generic state of a frozen slots dataclass.
        return (type(self), _fields_of(self))

    @property
    def correlation_key(self) -> CorrelationKey:
        return (self.principal, self.client_id, self.request_id)

    def remaining_s(self, now_unix_s: float | None = None) -> float | None:
        """Seconds left before the deadline (may be negative), or None without one."""
        if self.deadline_unix_s is None:
            return None
        now = time.time() if now_unix_s is None else now_unix_s
        return self.deadline_unix_s - now

    def expired(self, now_unix_s: float | None = None) -> bool:
        remaining = self.remaining_s(now_unix_s)
        return remaining is not None and remaining <= 0

    def with_deadline_in(self, timeout_s: float, now_unix_s: float | None = None) -> Envelope:
        """A copy whose deadline is ``timeout_s`` from now (keeps an earlier one)."""
        now = time.time() if now_unix_s is None else now_unix_s
        deadline = now + timeout_s
        if self.deadline_unix_s is not None:
            deadline = min(deadline, self.deadline_unix_s)
        return replace(self, deadline_unix_s=deadline)

    def to_headers(self) -> dict[str, str]:
        """The envelope as string headers (Kafka headers, SQS attributes, HTTP)."""
        headers = {
            f"{_HEADER_PREFIX}client-id": self.client_id,
            f"{_HEADER_PREFIX}request-id": self.request_id,
            f"{_HEADER_PREFIX}principal": self.principal,
        }
        if self.reply_to is not None:
            headers[f"{_HEADER_PREFIX}reply-to"] = self.reply_to
        if self.deadline_unix_s is not None:
            headers[f"{_HEADER_PREFIX}deadline"] = repr(self.deadline_unix_s)
        if self.traceparent is not None:
            headers["traceparent"] = self.traceparent
        if self.tracestate is not None:
            headers["tracestate"] = self.tracestate
        if self.idempotency_key is not None:
            headers[f"{_HEADER_PREFIX}idempotency-key"] = self.idempotency_key
        if self.method is not None:
            headers["mcp-method"] = self.method
        if self.name is not None:
            headers["mcp-name"] = self.name
        for name, value in self.attributes:
            headers[f"{_HEADER_PREFIX}attr-{name}"] = value
        return headers

    @classmethod
    def from_headers(cls, headers: dict[str, str]) -> Self:
        """Read an envelope back from :meth:`to_headers` output; unknown headers ignored.

        Raises:
            InvalidRequest: a header value is too long or the deadline is not a number.
        """
        for name, value in headers.items():
            if len(value) > _MAX_HEADER_VALUE_CHARS:
                raise InvalidRequest(f"header {name} is over {_MAX_HEADER_VALUE_CHARS} chars")

        def get(name: str) -> str | None:
            return headers.get(f"{_HEADER_PREFIX}{name}")

        deadline_text = get("deadline")
        deadline: float | None = None
        if deadline_text is not None:
            try:
                deadline = float(deadline_text)
            except ValueError:
                raise InvalidRequest(f"deadline header {deadline_text!r} is not a number") from None
            if not math.isfinite(deadline):
                raise InvalidRequest("deadline header must be finite")
        attr_prefix = f"{_HEADER_PREFIX}attr-"
        return cls(
            client_id=get("client-id") or "",
            request_id=get("request-id") or "",
            principal=get("principal") or ANONYMOUS,
            reply_to=get("reply-to"),
            deadline_unix_s=deadline,
            traceparent=headers.get("traceparent"),
            tracestate=headers.get("tracestate"),
            idempotency_key=get("idempotency-key"),
            method=headers.get("mcp-method"),
            name=headers.get("mcp-name"),
            attributes=tuple(
                sorted(
                    (name.removeprefix(attr_prefix), value)
                    for name, value in headers.items()
                    if name.startswith(attr_prefix)
                )
            ),
        )


_fields_of = attrgetter(*(f.name for f in fields(Envelope)))
