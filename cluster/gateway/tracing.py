"""The gateway's span per request, and the trace context it hands to the bus.

Where the caller's context comes from: ``params._meta.traceparent`` / ``tracestate``
(SEP-414: the MCP convention, the only carrier on stdio and WebSocket and the one an
MCP SDK's client writes), else the HTTP ``traceparent`` / ``tracestate`` headers (what
an instrumented HTTP client writes). When both are there ``_meta`` wins, as in other
MCP gateways (Envoy AI Gateway, ToolHive): it is the MCP request's own context, set
by the MCP client for this very request, while a header may belong to an HTTP hop in
between. Each carrier is read whole: ``tracestate`` is taken only from the carrier
whose ``traceparent`` was used. An invalid ``traceparent`` (or two of them in headers)
counts as absent, so the next carrier is tried, and with none a new trace starts
where an SDK is installed; the request itself never fails for it.

The span is a SERVER span named and attributed as the MCP semantic conventions (and
the SDK's own ``OpenTelemetryMiddleware``, which this replaces on the gateway's server)
do: ``tools/call echo``, ``mcp.method.name``, ``gen_ai.tool.name``, ``error.type``.
It covers the policy chain and the forward through the bus, on both the SDK's handler
path (:class:`GatewayTracing`) and the direct 2026-07-28 path (:func:`gateway_hop`).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import Any

import mcp_types as types
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from actors.tracing import TARGET_ATTRIBUTES, SpanKind, begin_hop, call_attributes, end_hop
from transports.tracecontext import TraceContext, parse_tracestate

__all__ = ["GatewayTracing", "forwarded_trace", "gateway_hop", "incoming_trace"]

_FORWARD: ContextVar[TraceContext | None] = ContextVar("raybus_gateway_trace", default=None)


def incoming_trace(
    meta: object, header_traceparents: list[str], header_tracestates: list[str]
) -> TraceContext | None:
    """The caller's trace context: ``_meta`` first, then the HTTP headers (module doc).

    ``header_*`` are every value of each header as received (a repeated ``tracestate``
    is one list split over lines; a repeated ``traceparent`` is invalid).
    """
    if isinstance(meta, Mapping):
        from_meta = TraceContext.from_carrier(meta)
        if from_meta is not None:
            return from_meta
    if len(header_traceparents) != 1:
        return None
    context = TraceContext.parse(header_traceparents[0])
    if context is None or not header_tracestates:
        return context
    state = parse_tracestate(",".join(header_tracestates))
    return TraceContext(context.trace_id, context.span_id, context.flags, state)


def forwarded_trace() -> TraceContext | None:
    """The context the request being served hands to the bus (set by the gateway hop)."""
    return _FORWARD.get()


class gateway_hop:
    """The gateway's span around serving one request; errors mark it failed.

    While it is open, :func:`forwarded_trace` is the context to hand to the bus; the
    body reports a handler's result with :meth:`result` (a tool's ``isError`` marks
    the span). A class, not a generator: this runs for every request.
    """

    __slots__ = ("_attached", "_hop", "_token", "tool_error")

    def __init__(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        incoming: TraceContext | None,
        *,
        protocol_version: str | None = None,
        request_id: object = None,
    ) -> None:
        attribute = TARGET_ATTRIBUTES.get(method)
        raw = None
        if params is not None and attribute is not None:
            raw = params.get("uri" if attribute == "mcp.resource.uri" else "name")
        target = raw if isinstance(raw, str) else None
        version = (("mcp.protocol.version", protocol_version),) if protocol_version else ()
        self._hop = begin_hop(
            f"{method} {target}" if target else method,
            SpanKind.SERVER,
            incoming,
            attributes=call_attributes(method, target, request_id, version),
            ambient=True,
        )
        self._token: Token[TraceContext | None] | None = None
        self._attached: Token[Context] | None = None
        self.tool_error = False

    def result(self, result: object) -> None:
        """Note a handler's result: a ``tools/call`` with ``isError`` marks the span."""
        if isinstance(result, types.CallToolResult):
            self.tool_error = result.is_error is True
        elif isinstance(result, Mapping):
            self.tool_error = result.get("isError") is True

    def __enter__(self) -> gateway_hop:
        self._token = _FORWARD.set(self._hop.forward)
        span = self._hop.span
        if span.is_recording():  # current for whatever else this request traces
            self._attached = otel_context.attach(trace.set_span_in_context(span))
        return self

    def __exit__(self, kind: object, exc: BaseException | None, _: object) -> None:
        if self._token is not None:
            _FORWARD.reset(self._token)
        if self._attached is not None:
            otel_context.detach(self._attached)
        if isinstance(exc, MCPError):
            end_hop(self._hop, str(exc.error.code), exc.error.message)
        elif isinstance(exc, Exception):
            end_hop(self._hop, type(exc).__qualname__, str(exc))
        else:  # success, or cancelled (not the request's failure)
            end_hop(self._hop, "tool_error" if self.tool_error else None)


def _header_values(request: object, name: str) -> list[str]:
    # HTTP only: a WebSocket's headers are its upgrade's, not any one request's.
    if getattr(request, "scope", {}).get("type") != "http":
        return []
    headers = getattr(request, "headers", None)
    getlist = getattr(headers, "getlist", None)
    if getlist is None:
        return []
    values: list[str] = getlist(name)
    return values


class GatewayTracing:
    """The SDK server middleware opening :func:`gateway_hop` for every request."""

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.request_id is None:  # a notification: no span, as no answer is traced
            return await call_next(ctx)
        params = ctx.params if isinstance(ctx.params, Mapping) else None
        request = ctx.request
        incoming = incoming_trace(
            params.get("_meta") if params is not None else None,
            _header_values(request, "traceparent"),
            _header_values(request, "tracestate"),
        )
        with gateway_hop(
            ctx.method,
            params,
            incoming,
            protocol_version=ctx.protocol_version,
            request_id=ctx.request_id,
        ) as hop:
            result = await call_next(ctx)
            hop.result(result)
            return result
