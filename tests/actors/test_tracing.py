"""Spans of the router and worker hops, and the trace context each hands on.

Without an SDK the context passes through untouched; with one (``recorded_spans``, an
SDK for raybus's tracer only) each hop's span is the child of the context that arrived
and is the parent of what it hands on.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from actors.tracing import begin_hop, end_envelope_hop, envelope_hop, with_trace_meta
from actors.worker.core import WorkerCore
from actors.worker.sdk_link import SdkServerLink, load_server_object
from tests.actors.fakes import RecordingWorkerPorts
from tests.actors.test_router import call, router
from tests.actors.test_worker import make_worker, tool_call
from transports.envelope import Envelope
from transports.errors import BusErrorCode
from transports.frame import Frame
from transports.message import Response
from transports.tracecontext import TraceContext

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = TraceContext(TRACE_ID, CALLER_SPAN, 1, "vendor=x")


def span_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.span_id, "016x")


def trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def parent_id(span: ReadableSpan) -> str | None:
    return format(span.parent.span_id, "016x") if span.parent is not None else None


# -- the hop itself ----------------------------------------------------------------


def test_without_an_sdk_a_hop_hands_on_the_context_it_got_and_builds_no_attributes() -> None:
    built: list[int] = []

    def attributes() -> dict[str, str | int]:
        built.append(1)
        return {}

    hop = begin_hop("x", SpanKind.INTERNAL, CALLER, attributes=attributes)
    assert hop.forward is CALLER
    assert not hop.span.is_recording()
    assert built == []
    assert begin_hop("x", SpanKind.INTERNAL, None).forward is None


def test_with_an_sdk_a_hop_is_the_child_of_what_arrived_and_the_parent_of_what_leaves(
    recorded_spans: InMemorySpanExporter,
) -> None:
    hop = begin_hop("x", SpanKind.SERVER, CALLER, attributes=lambda: {"a": 1})
    assert hop.forward is not None
    assert hop.forward.trace_id == TRACE_ID
    assert hop.forward.tracestate == "vendor=x"  # a vendor's state travels on
    hop.span.end()
    (span,) = recorded_spans.get_finished_spans()
    assert trace_id(span) == TRACE_ID
    assert parent_id(span) == CALLER_SPAN
    assert span_id(span) == hop.forward.span_id
    assert span.kind is SpanKind.SERVER
    assert span.attributes == {"a": 1}


def test_with_an_sdk_a_hop_without_a_caller_starts_a_trace(
    recorded_spans: InMemorySpanExporter,
) -> None:
    hop = begin_hop("x", SpanKind.INTERNAL, None)
    assert hop.forward is not None
    assert hop.forward.trace_id != TRACE_ID
    hop.span.end()
    (span,) = recorded_spans.get_finished_spans()
    assert span.parent is None


def test_a_failed_call_marks_its_span_with_the_error_code(
    recorded_spans: InMemorySpanExporter,
) -> None:
    envelope = Envelope(
        request_id="7", method="tools/call", name="echo", traceparent=CALLER.traceparent
    )
    failed = envelope_hop(envelope, SpanKind.CLIENT)
    end_envelope_hop(failed, Response.failure(7, BusErrorCode.OVERLOADED, "full"))
    tool_error = envelope_hop(envelope, SpanKind.CLIENT)
    end_envelope_hop(tool_error, Response.success(7, {"content": [], "isError": True}))
    fine = envelope_hop(envelope, SpanKind.CLIENT)
    end_envelope_hop(fine, Response.success(7, {"content": []}))
    spans = recorded_spans.get_finished_spans()
    assert [s.name for s in spans] == ["tools/call echo"] * 3
    assert [(s.attributes or {}).get("error.type") for s in spans] == ["1002", "tool_error", None]
    assert [s.status.status_code for s in spans] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert (spans[0].attributes or {})["gen_ai.tool.name"] == "echo"
    assert (spans[0].attributes or {})["jsonrpc.request.id"] == "7"


# -- _meta for the hosted server -----------------------------------------------------


def test_meta_carries_exactly_the_envelopes_context() -> None:
    meta: dict[str, Any] = {"progressToken": 3, "baggage": "k=v", "tracestate": "old=1"}
    params = {"name": "t", "_meta": meta}
    stamped = with_trace_meta(params, CALLER)
    assert stamped["_meta"] == {
        "progressToken": 3,
        "baggage": "k=v",
        "traceparent": CALLER.traceparent,
        "tracestate": "vendor=x",
    }
    assert meta["tracestate"] == "old=1"  # the caller's dict is not changed
    assert with_trace_meta(stamped, CALLER) is stamped
    plain = TraceContext(TRACE_ID, CALLER_SPAN, 1)
    assert "tracestate" not in with_trace_meta(stamped, plain)["_meta"]


def test_meta_the_envelope_does_not_confirm_is_removed() -> None:
    invalid = {"name": "t", "_meta": {"traceparent": "garbage", "tracestate": "a=1"}}
    assert with_trace_meta(invalid, None) == {"name": "t"}
    mixed = {"name": "t", "_meta": {"traceparent": "garbage", "progressToken": 1}}
    assert with_trace_meta(mixed, None) == {"name": "t", "_meta": {"progressToken": 1}}
    untouched = {"name": "t", "_meta": {"progressToken": 1}}
    assert with_trace_meta(untouched, None) is untouched
    assert with_trace_meta(None, CALLER) is None


# -- the router --------------------------------------------------------------------


def traced(frame: Frame, context: TraceContext = CALLER) -> Frame:
    envelope = frame.envelope
    return Frame(
        Envelope(
            client_id=envelope.client_id,
            request_id=envelope.request_id,
            reply_to=envelope.reply_to,
            method=envelope.method,
            name=envelope.name,
            traceparent=context.traceparent,
            tracestate=context.tracestate,
        ),
        frame.body,
    )


def test_without_an_sdk_the_router_delivers_the_callers_context_unchanged() -> None:
    core, ports, _ = router(("w1", 1))
    frame = traced(call("a", 1))
    core.submit([frame])
    (delivered,) = ports.delivered_to("w1")
    assert delivered is frame


def test_the_routers_span_lasts_from_queued_to_dispatched_and_parents_the_worker(
    recorded_spans: InMemorySpanExporter,
) -> None:
    core, ports, _ = router(("w1", 1))
    core.submit([traced(call("a", 1)), traced(call("a", 2))])
    assert len(recorded_spans.get_finished_spans()) == 1  # the second waits in the queue
    core.completed("w1", [])
    first = ports.delivered_to("w1")[0]
    (span,) = recorded_spans.get_finished_spans()
    assert span.name == "route tools/call echo"
    assert (span.attributes or {})["raybus.pool"] == "kit"
    assert parent_id(span) == CALLER_SPAN
    forwarded = TraceContext.parse(first.envelope.traceparent, first.envelope.tracestate)
    assert forwarded == TraceContext(TRACE_ID, span_id(span), 1, "vendor=x")


def test_a_call_refused_from_the_queue_ends_its_router_span_as_failed(
    recorded_spans: InMemorySpanExporter,
) -> None:
    core, _, _ = router(("w1", 1), max_pending_per_pool=1)
    core.submit([traced(call("a", n)) for n in range(1, 4)])  # one runs, one waits, one refused
    core.cancel([("anonymous", "a", "2")])
    errors = [(s.attributes or {}).get("error.type") for s in recorded_spans.get_finished_spans()]
    assert sorted(errors, key=str) == [
        str(BusErrorCode.OVERLOADED.value),
        str(BusErrorCode.CANCELLED.value),
        None,
    ]


# -- the worker --------------------------------------------------------------------


@pytest.fixture
async def kit() -> AsyncIterator[tuple[WorkerCore, RecordingWorkerPorts]]:
    ports = RecordingWorkerPorts()
    server = load_server_object("cluster.examples.testkit:server")
    worker = await make_worker(lambda: SdkServerLink(server), ports)
    yield worker, ports
    await worker.drain(0, timeout_s=5)


async def seen_by_server(
    worker: WorkerCore, ports: RecordingWorkerPorts, frame: Frame
) -> dict[str, object]:
    worker.deliver([frame])
    (answer,) = await ports.wait_for(Response)
    response = answer.decode()
    assert isinstance(response, Response)
    assert isinstance(response.result, dict)
    dumped: dict[str, object] = json.loads(response.result["content"][0]["text"])["params"]
    return dumped


def with_context(frame: Frame, context: TraceContext | None) -> Frame:
    return traced(frame, context) if context is not None else frame


async def test_the_hosted_server_sees_the_callers_context_in_meta(
    kit: tuple[WorkerCore, RecordingWorkerPorts],
) -> None:
    worker, ports = kit
    frame = with_context(tool_call("a", 1, "dump_request"), CALLER)
    params = await seen_by_server(worker, ports, frame)
    assert params["_meta"] == {"traceparent": CALLER.traceparent, "tracestate": "vendor=x"}


async def test_with_an_sdk_the_hosted_server_sees_the_workers_span_as_parent(
    kit: tuple[WorkerCore, RecordingWorkerPorts], recorded_spans: InMemorySpanExporter
) -> None:
    worker, ports = kit
    params = await seen_by_server(worker, ports, traced(tool_call("a", 1, "dump_request")))
    (span,) = recorded_spans.get_finished_spans()
    assert span.name == "tools/call dump_request"
    assert span.kind is SpanKind.CLIENT
    assert parent_id(span) == CALLER_SPAN
    assert (span.attributes or {})["raybus.worker"] == "worker-1"
    meta = params["_meta"]
    assert isinstance(meta, dict)
    assert meta["traceparent"] == f"00-{TRACE_ID}-{span_id(span)}-01"
