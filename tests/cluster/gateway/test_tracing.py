"""The gateway takes the caller's trace context and hands it to the bus, on every path.

Served over HTTP to the official client (a fake bus, no Ray) in three ways: the
handshake era (the SDK's handler path), the 2026-07-28 era (the direct path for tool
calls), and the 2026-07-28 era with the direct path switched off (the SDK's modern
path). What the bus receives is the context the worker and its server will see.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from typing import Any

import httpx2 as httpx
import mcp
import pytest
from mcp.client.streamable_http import streamable_http_client
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from cluster.gateway.server import Gateway
from cluster.gateway.tracing import incoming_trace
from tests.cluster.gateway.fake_bus import FakeBus, fake_bus
from tests.cluster.gateway.serving import serving
from tests.cluster.gateway.test_direct_calls import sdk_path_only
from transports.tracecontext import TraceContext

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
HEADER = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
META = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
PATHS = ["handshake era", "2026-07-28 direct", "2026-07-28 through the SDK"]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    switch: AbstractContextManager[None] = (
        sdk_path_only(monkeypatch) if request.param.endswith("SDK") else nullcontext()
    )
    with switch:
        yield request.param


@asynccontextmanager
async def client(
    path: str, bus: FakeBus, headers: list[tuple[str, str]]
) -> AsyncIterator[mcp.Client]:
    mode = "legacy" if path == "handshake era" else "2026-07-28"
    async with (
        serving(Gateway(bus)) as url,
        httpx.AsyncClient(headers=headers, timeout=30) as http,
        mcp.Client(streamable_http_client(url, http_client=http), mode=mode) as session,
    ):
        yield session


async def traced_echo(
    path: str, headers: list[tuple[str, str]], meta: dict[str, Any] | None = None
) -> tuple[str | None, str | None]:
    """(traceparent, tracestate) the bus received for one echo call."""
    bus = fake_bus()
    async with client(path, bus, headers) as session:
        result = await session.call_tool("echo", {"text": "hi"}, meta=meta)  # type: ignore[arg-type]
    assert not result.is_error
    (call,) = [c for c in bus.calls if c.method == "tools/call"]
    return call.traceparent, call.tracestate


async def test_the_http_traceparent_header_reaches_the_bus(path: str) -> None:
    headers = [("traceparent", HEADER), ("tracestate", "a=1"), ("tracestate", "b=2")]
    assert await traced_echo(path, headers) == (HEADER, "a=1,b=2")


async def test_meta_wins_over_the_header_and_brings_its_own_tracestate(path: str) -> None:
    headers = [("traceparent", HEADER), ("tracestate", "header=1")]
    meta = {"traceparent": META, "tracestate": "meta=1"}
    assert await traced_echo(path, headers, meta) == (META, "meta=1")
    assert await traced_echo(path, headers, {"traceparent": META}) == (META, None)


async def test_an_invalid_meta_traceparent_falls_back_to_the_header(path: str) -> None:
    meta = {"traceparent": HEADER.upper(), "tracestate": "meta=1"}
    assert await traced_echo(path, [("traceparent", HEADER)], meta) == (HEADER, None)


@pytest.mark.parametrize(
    "headers",
    [
        [("traceparent", f"00-{'0' * 32}-00f067aa0ba902b7-01")],
        [("traceparent", "nonsense")],
        [("traceparent", HEADER), ("traceparent", META)],  # two: W3C says invalid
    ],
)
async def test_an_invalid_trace_context_is_ignored_and_the_call_still_served(
    path: str, headers: list[tuple[str, str]]
) -> None:
    assert await traced_echo(path, headers) == (None, None)


def test_a_repeated_tracestate_is_one_list_and_a_bad_one_is_dropped_alone() -> None:
    assert incoming_trace(None, [HEADER], ["a=1", "b=2"]) == TraceContext.parse(HEADER, "a=1,b=2")
    assert incoming_trace(None, [HEADER], ["a=1", "A=2"]) == TraceContext.parse(HEADER)
    assert incoming_trace({"traceparent": 5}, [HEADER], []) == TraceContext.parse(HEADER)


async def test_the_gateway_span_is_the_callers_child_and_the_buss_parent(
    path: str, recorded_spans: InMemorySpanExporter
) -> None:
    traceparent, _ = await traced_echo(path, [("traceparent", HEADER)])
    (span,) = [s for s in recorded_spans.get_finished_spans() if s.name == "tools/call echo"]
    assert span.context is not None
    assert span.parent is not None
    assert span.kind is SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert traceparent == f"00-{TRACE_ID}-{format(span.context.span_id, '016x')}-01"
    attributes = dict(span.attributes or {})
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["gen_ai.tool.name"] == "echo"
    assert attributes["mcp.protocol.version"] in ("2025-11-25", "2026-07-28")


async def test_a_refused_call_marks_the_gateway_span_with_its_code(
    path: str, recorded_spans: InMemorySpanExporter
) -> None:
    bus = fake_bus()
    async with client(path, bus, [("traceparent", HEADER)]) as session:
        with pytest.raises(mcp.MCPError):
            await session.call_tool("overloaded", {})
    (span,) = [s for s in recorded_spans.get_finished_spans() if s.name == "tools/call overloaded"]
    assert (span.attributes or {})["error.type"] == "1002"
    assert span.status.status_code is StatusCode.ERROR
