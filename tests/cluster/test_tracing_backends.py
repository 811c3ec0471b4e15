"""One trace id end to end, on Ray, Kafka and SQS: client -> gateway -> bus -> worker ->
the hosted server.

The gateway runs in this process over a real bus, its spans recorded in memory (the
``recorded_spans`` fixture); the pool's workers install an SDK themselves from
``RAYBUS_OTEL_EXPORTER`` in their ``runtime_env`` and append their spans - the worker's
and the hosted SDK server's own - to a file this test reads. Three callers: an official
client setting the HTTP ``traceparent`` header (2026-07-28, the direct path), one
putting it in ``_meta`` (handshake era, the SDK's path), and the Python ``BusClient``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import mcp
import pytest
from mcp.client.streamable_http import streamable_http_client
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cluster.client import BusClient
from cluster.gateway.server import Gateway
from cluster.telemetry import EXPORTER_VARIABLE
from tests.cluster.bus_helpers import bus_config, running_bus
from tests.cluster.gateway.serving import serving
from tests.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]

HEADER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
META = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
PYTHON = "00-11111111111111111111111111111111-2222222222222222-01"


@pytest.fixture(
    params=[
        pytest.param("ray"),
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("sqs", marks=pytest.mark.sqs),
    ]
)
def backend(request: pytest.FixtureRequest, ray_session: None) -> dict[str, Any]:
    """The bus configuration's backend part (the broker started only when asked)."""
    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        return {"backend": "kafka", "kafka": {"bootstrap": bootstrap, "partitions": 2}}
    if request.param == "sqs":
        endpoint = request.getfixturevalue("sqs_endpoint")
        credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        return {"backend": "sqs", "sqs": {"endpoint_url": endpoint, **credentials}}
    return {}


@asynccontextmanager
async def traced_bus(backend: dict[str, Any], spans: Path) -> AsyncIterator[tuple[str, BusClient]]:
    env = {EXPORTER_VARIABLE: f"file:{spans}", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    pool = {
        "name": "kit",
        "server": "cluster.examples.testkit:server",
        "min_workers": 1,
        "runtime_env": {"env_vars": env},
    }
    async with (
        running_bus(bus_config([pool], **backend)) as client,
        serving(Gateway(client, call_timeout_s=60)) as url,
    ):
        yield url, client


def seen_meta(result: Any) -> dict[str, Any]:
    """``_meta`` as the hosted server received it (testkit's ``dump_request``)."""
    meta: dict[str, Any] = json.loads(result.content[0].text)["params"]["_meta"]
    return meta


def file_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def hex_id(value: str | None) -> str | None:
    return value.removeprefix("0x") if value else None


async def test_one_trace_id_reaches_the_hosted_server_through_every_hop(
    backend: dict[str, Any], recorded_spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    path = tmp_path / "spans.jsonl"
    async with traced_bus(backend, path) as (url, bus):
        async with (
            httpx.AsyncClient(headers={"traceparent": HEADER}, timeout=60) as http,
            mcp.Client(streamable_http_client(url, http_client=http), mode="2026-07-28") as modern,
        ):
            by_header = seen_meta(await modern.call_tool("dump_request"))
        async with mcp.Client(url, mode="legacy") as legacy:
            by_meta = seen_meta(await legacy.call_tool("dump_request", meta={"traceparent": META}))  # type: ignore[arg-type]
        by_python = seen_meta(await bus.call_tool("dump_request", traceparent=PYTHON))

        # The worker hands the server its own span; the trace id is the caller's.
        for meta, sent in ((by_header, HEADER), (by_meta, META), (by_python, PYTHON)):
            assert meta["traceparent"].split("-")[1] == sent.split("-")[1]
            assert meta["traceparent"] != sent

        # gateway (this process) -> worker -> the hosted server's own span (worker process)
        trace_id = HEADER.split("-")[1]
        # (Every request of that client carries the header: only one is the call.)
        (gateway,) = [
            s
            for s in recorded_spans.get_finished_spans()
            if s.context is not None
            and format(s.context.trace_id, "032x") == trace_id
            and s.name == "tools/call dump_request"
        ]
        assert gateway.parent is not None
        assert format(gateway.parent.span_id, "016x") == HEADER.split("-")[2]
        gateway_span = format(gateway.context.span_id, "016x")

        def chain() -> list[dict[str, Any]]:
            return [s for s in file_spans(path) if hex_id(s["context"]["trace_id"]) == trace_id]

        await wait_until(lambda: len(chain()) >= 2, timeout_s=60)
    spans = {s["kind"]: s for s in chain()}
    worker, server = spans["SpanKind.CLIENT"], spans["SpanKind.SERVER"]
    assert worker["name"] == "tools/call dump_request"
    assert hex_id(worker["parent_id"]) == gateway_span
    assert worker["resource"]["attributes"]["service.name"] == "raybus-worker"
    assert hex_id(server["parent_id"]) == hex_id(worker["context"]["span_id"])
    assert by_header["traceparent"].split("-")[2] == hex_id(worker["context"]["span_id"])
