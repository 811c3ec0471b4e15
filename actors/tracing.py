"""OpenTelemetry spans for the hops of a call, and the trace context they hand on.

Each hop (gateway, router, worker) opens one span whose parent is the trace context that
arrived with the call, and hands on the context to travel further: its own span's when
an OpenTelemetry SDK is installed in the process, else the one that arrived, unchanged
(W3C: a hop that does not trace passes the context through). Only
``opentelemetry-api`` is needed; without an SDK its tracer is a no-op - 2 to 7 us of
CPU a hop, the parsing of an arriving context included
(``python -m benchmarks.tracing_overhead``) - and no span attribute is built, since
attributes are set only on a recording span.

The tracer is the API's proxy: an SDK installed after this module was imported (a
notebook's ``trace.set_tracer_provider``, or :mod:`cluster.telemetry` at actor start) is
used from then on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    Tracer,
    TraceState,
)

from transports.envelope import Envelope
from transports.message import Response
from transports.tracecontext import TraceContext

__all__ = [
    "TARGET_ATTRIBUTES",
    "TRACER_NAME",
    "Hop",
    "SpanKind",
    "begin_hop",
    "call_attributes",
    "call_trace_context",
    "current_trace_context",
    "end_envelope_hop",
    "end_hop",
    "envelope_hop",
    "trace_context_of",
    "with_trace_meta",
]

TRACER_NAME: Final = "raybus"
_TRACE_KEYS: Final = ("traceparent", "tracestate")
_tracer: Tracer = trace.get_tracer(TRACER_NAME)

TARGET_ATTRIBUTES: Final = {
    "tools/call": "gen_ai.tool.name",
    "prompts/get": "gen_ai.prompt.name",
    "resources/read": "mcp.resource.uri",
    "resources/subscribe": "mcp.resource.uri",
    "resources/unsubscribe": "mcp.resource.uri",
}

Attributes = Callable[[], dict[str, str | int]]


class Hop:
    """One hop's span and the context it hands on (``forward``), for :func:`end_hop`.

    ``forward is parent`` when the hop passes the context through untouched (no SDK).
    """

    __slots__ = ("forward", "parent", "span")

    def __init__(
        self, span: Span, forward: TraceContext | None, parent: TraceContext | None
    ) -> None:
        self.span = span
        self.forward = forward
        self.parent = parent

    def stamped(self, envelope: Envelope) -> Envelope:
        """``envelope`` carrying :attr:`forward` (the same object when nothing changes)."""
        forward = self.forward
        if forward is self.parent or forward is None:
            return envelope
        return replace(envelope, traceparent=forward.traceparent, tracestate=forward.tracestate)


def begin_hop(
    name: str,
    kind: SpanKind,
    parent: TraceContext | None,
    *,
    attributes: Attributes | None = None,
    ambient: bool = False,
) -> Hop:
    """Start this hop's span under ``parent``; its :attr:`Hop.forward` travels on.

    Args:
        name: the span's name.
        kind: SERVER where a request enters, CLIENT where one leaves, else INTERNAL.
        parent: the context that arrived with the call, if any.
        attributes: called only when the span records (no dict is built otherwise).
        ambient: without a ``parent``, nest under the process's current span (the
            gateway, behind instrumented HTTP middleware) instead of starting a trace.
    """
    parent_span: Span | None = None
    if parent is not None:
        parent_span = NonRecordingSpan(
            SpanContext(
                int(parent.trace_id, 16),
                int(parent.span_id, 16),
                is_remote=True,
                trace_flags=TraceFlags(parent.flags),
                trace_state=_trace_state(parent.tracestate),
            )
        )
        context: Context | None = trace.set_span_in_context(parent_span, Context())
    else:
        context = None if ambient else Context()
    span = _tracer.start_span(name, context=context, kind=kind)
    if span is parent_span:  # the API's no-op tracer hands the parent back: pass it on
        return Hop(span, parent, parent)
    if span.is_recording() and attributes is not None:
        span.set_attributes(attributes())
    forward = trace_context_of(span)
    return Hop(span, parent if forward is None else forward, parent)


def end_hop(hop: Hop, error: str | None = None, description: str | None = None) -> None:
    """End the hop's span; ``error`` (an ``error.type``: a code, an exception's name)
    marks it failed."""
    span = hop.span
    if error is not None and span.is_recording():
        span.set_attribute("error.type", error)
        span.set_status(StatusCode.ERROR, description)
    span.end()


Extra = tuple[tuple[str, str], ...]


def call_attributes(
    method: str, target: str | None, request_id: object, extra: Extra = ()
) -> Attributes:
    """The MCP semantic-convention attributes of a call's span, built when asked.

    ``extra``: more ``(attribute, value)`` pairs (``raybus.pool``, ...).
    """

    def attributes() -> dict[str, str | int]:
        found: dict[str, str | int] = {"mcp.method.name": method}
        if target is not None:
            found[TARGET_ATTRIBUTES.get(method, "mcp.target")] = target
        if method == "tools/call":
            found["gen_ai.operation.name"] = "execute_tool"
        if request_id is not None:
            found["jsonrpc.request.id"] = str(request_id)
        found.update(extra)
        return found

    return attributes


def envelope_hop(envelope: Envelope, kind: SpanKind, *, prefix: str = "", extra: Extra = ()) -> Hop:
    """A hop for a call on the bus, parented from and named by its envelope."""
    method = envelope.method or "request"
    target = envelope.name
    attributes = call_attributes(method, target, envelope.request_id, extra)
    parent = None
    if envelope.traceparent is not None:
        parent = TraceContext.parse(envelope.traceparent, envelope.tracestate)
    name = f"{prefix}{method} {target}" if target else f"{prefix}{method}"
    return begin_hop(name, kind, parent, attributes=attributes)


def end_envelope_hop(hop: Hop, response: Response | None) -> None:
    """End a call's hop by its outcome: a JSON-RPC error's code, a tool's ``isError``,
    or ``cancelled`` when there is no response."""
    if response is None:
        end_hop(hop, "cancelled")
    elif response.error is not None:
        end_hop(hop, str(response.error.code), response.error.message)
    elif isinstance(response.result, dict) and response.result.get("isError") is True:
        end_hop(hop, "tool_error")
    else:
        end_hop(hop)


def trace_context_of(span: Span) -> TraceContext | None:
    """The span's context as W3C values, or None for an invalid (no-op) span."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    state = context.trace_state.to_header() if context.trace_state else ""
    return TraceContext(
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
        int(context.trace_flags),
        state or None,
    )


def current_trace_context() -> TraceContext | None:
    """The trace context of the process's current span, if one is active."""
    return trace_context_of(trace.get_current_span())


def _trace_state(header: str | None) -> TraceState | None:
    return TraceState.from_header([header]) if header else None


def with_trace_meta(params: Any, context: TraceContext | None) -> Any:
    """``params`` whose ``_meta`` carries exactly ``context`` (SEP-414 keys).

    The envelope is the one source of trace context past the edge: a ``_meta`` value it
    does not confirm (one the gateway found invalid) is removed rather than forwarded.
    Returns ``params`` itself when nothing changes.
    """
    if not isinstance(params, dict):
        return params
    meta = params.get("_meta")
    meta = meta if isinstance(meta, dict) else {}
    if context is None:
        if not any(key in meta for key in _TRACE_KEYS):
            return params
        kept = {k: v for k, v in meta.items() if k not in _TRACE_KEYS}
        rest = {k: v for k, v in params.items() if k != "_meta"}
        return {**rest, "_meta": kept} if kept else rest
    if meta.get("traceparent") == context.traceparent and meta.get("tracestate") == (
        context.tracestate
    ):
        return params
    updated = {k: v for k, v in meta.items() if k != "tracestate"}
    updated["traceparent"] = context.traceparent
    if context.tracestate is not None:
        updated["tracestate"] = context.tracestate
    return {**params, "_meta": updated}


def call_trace_context(
    params: dict[str, Any], traceparent: str | None, tracestate: str | None
) -> TraceContext | None:
    """A call's trace context: the caller's arguments, ``_meta``, or the current span."""
    if traceparent is not None:
        given = TraceContext.parse(traceparent, tracestate)
        if given is None:
            raise ValueError(
                f"traceparent {traceparent!r:.80} is not a W3C traceparent "
                "(00-<32 hex trace id>-<16 hex span id>-<2 hex flags>, lowercase, not zeros)"
            )
        return given
    if tracestate is not None:
        raise ValueError("tracestate needs a traceparent")
    meta = params.get("_meta")
    from_meta = TraceContext.from_carrier(meta) if isinstance(meta, dict) else None
    return from_meta if from_meta is not None else current_trace_context()
