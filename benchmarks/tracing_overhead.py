"""What tracing costs a call when no OpenTelemetry SDK is installed (the default).

``python -m benchmarks.tracing_overhead`` times, per call and without Ray, each hop's
tracing work: the gateway reading the caller's context and opening its span, the
router's span and re-stamped envelope, the worker's span and the ``_meta`` it writes,
and the Python client choosing a context; each with a ``traceparent`` arriving and
without one: the best of several rounds of this process's CPU time (a shared machine
only ever slows a round down).
It must run in a process with no SDK: it installs none.
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider

from actors.tracing import (
    SpanKind,
    call_trace_context,
    end_envelope_hop,
    end_hop,
    envelope_hop,
    with_trace_meta,
)
from cluster.gateway.tracing import gateway_hop, incoming_trace
from transports.envelope import Envelope
from transports.message import Response

_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
_NUMBER = 20_000
_ROUNDS = 7


def _gateway(traceparent: str | None) -> Callable[[], None]:
    headers = [traceparent] if traceparent else []
    params = {"name": "echo", "arguments": {"text": "hi"}}

    def hop() -> None:
        incoming = incoming_trace(params.get("_meta"), headers, [])
        with gateway_hop("tools/call", params, incoming, protocol_version="2026-07-28"):
            pass

    return hop


def _router(traceparent: str | None) -> Callable[[], None]:
    envelope = Envelope(request_id="1", method="tools/call", name="echo", traceparent=traceparent)
    extra = (("raybus.pool", "kit"),)

    def hop() -> None:
        span = envelope_hop(envelope, SpanKind.INTERNAL, prefix="route ", extra=extra)
        span.stamped(envelope)
        end_hop(span)

    return hop


def _worker(traceparent: str | None) -> Callable[[], None]:
    envelope = Envelope(request_id="1", method="tools/call", name="echo", traceparent=traceparent)
    params = {"name": "echo", "arguments": {"text": "hi"}}
    response = Response.success(1, {"content": []})
    extra = (("raybus.worker", "w"),)

    def hop() -> None:
        span = envelope_hop(envelope, SpanKind.CLIENT, extra=extra)
        with_trace_meta(params, span.forward)
        end_envelope_hop(span, response)

    return hop


def _client(traceparent: str | None) -> Callable[[], None]:
    params = {"name": "echo", "arguments": {}}

    def choose() -> None:
        call_trace_context(params, traceparent, None)

    return choose


def _per_call_us(work: Callable[[], None]) -> float:
    # CPU time of this process: other processes on a shared machine inflate wall time.
    timer = timeit.Timer(work, timer=time.process_time)
    return min(timer.repeat(number=_NUMBER, repeat=_ROUNDS)) / _NUMBER * 1e6


def main() -> None:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, ProxyTracerProvider | NoOpTracerProvider):
        raise SystemExit("an OpenTelemetry SDK is installed: this measures the cost without one")
    print(f"{'hop':<8} {'no traceparent':>16} {'with traceparent':>18}   (us per call)")
    total = [0.0, 0.0]
    for name, make in (
        ("gateway", _gateway),
        ("router", _router),
        ("worker", _worker),
        ("client", _client),
    ):
        without, with_ = _per_call_us(make(None)), _per_call_us(make(_TRACEPARENT))
        total[0] += without
        total[1] += with_
        print(f"{name:<8} {without:>16.2f} {with_:>18.2f}")
    print(f"{'total':<8} {total[0]:>16.2f} {total[1]:>18.2f}")


if __name__ == "__main__":
    main()
