"""The router's span, recorded in the router actor's own process, between the gateway's
and the worker's: one trace id across gateway -> router -> worker -> hosted server.

The bus is launched by a driver whose Ray job carries ``RAYBUS_OTEL_EXPORTER=file:...``
(:mod:`tests.cluster.traced_launch`), so its router and workers install an SDK at start
and append their spans to one file; the gateway runs in this process over the bus, its
spans recorded in memory (``recorded_spans``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx
import mcp
import pytest
import ray
from mcp.client.streamable_http import streamable_http_client
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cluster.bus import stop_bus
from cluster.client import BusClient
from cluster.gateway.server import Gateway
from cluster.naming import NAMESPACE, actor_names
from cluster.telemetry import EXPORTER_VARIABLE
from tests.cluster.bus_helpers import bus_config
from tests.cluster.gateway.serving import serving
from tests.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TRACEPARENT = "00-5c1e0b7a9d3f4e21a8b6c4d2e0f19a37-00f067aa0ba902b7-01"
TRACE_ID = TRACEPARENT.split("-")[1]


def hex_id(value: str | None) -> str | None:
    return value.removeprefix("0x") if value else None


def file_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def actor_pid(name: str) -> int:
    handle = ray.get_actor(name, namespace=NAMESPACE)
    # Ray's public state API needs the dashboard, which the test session does not run.
    from ray._private import state

    info: dict[str, Any] = state.actors(actor_id=handle._actor_id.hex())
    return int(info["Pid"])


async def launch_traced(config_json: str, spans: Path) -> None:
    env = {
        EXPORTER_VARIABLE: f"file:{spans}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        # Each span's resource then says which process made it (process.pid).
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "process",
    }
    driver_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    address = ray.get_runtime_context().gcs_address
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "tests.cluster.traced_launch", address, config_json, json.dumps(env)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=driver_env,
    )
    async with asyncio.timeout(180):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-4000:]
    assert out.decode().split() == ["ready"]


async def test_gateway_router_and_worker_spans_share_one_trace_in_their_own_processes(
    ray_session: None, recorded_spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    path = tmp_path / "spans.jsonl"
    config = bus_config([{"name": "kit", "server": "cluster.examples.testkit:server"}])
    await launch_traced(config.model_dump_json(exclude_unset=True), path)
    try:
        client = await BusClient.connect(config.name)
        try:
            async with (
                serving(Gateway(client, call_timeout_s=60)) as url,
                httpx.AsyncClient(headers={"traceparent": TRACEPARENT}, timeout=60) as http,
                mcp.Client(
                    streamable_http_client(url, http_client=http), mode="2026-07-28"
                ) as mcp_client,
            ):
                await mcp_client.call_tool("dump_request")

            def chain() -> list[dict[str, Any]]:
                return [s for s in file_spans(path) if hex_id(s["context"]["trace_id"]) == TRACE_ID]

            # router, worker, and the hosted server's own span
            await wait_until(lambda: len(chain()) >= 3, timeout_s=60)
            router_pid = actor_pid(actor_names.router(config.name))
        finally:
            await client.close()
    finally:
        await stop_bus(config.name)

    (gateway,) = [
        s
        for s in recorded_spans.get_finished_spans()
        if s.context is not None
        and format(s.context.trace_id, "032x") == TRACE_ID
        and s.name == "tools/call dump_request"
    ]
    assert gateway.context is not None
    by_name = {(s["name"], s["kind"]): s for s in chain()}
    router = by_name["route tools/call dump_request", "SpanKind.INTERNAL"]
    worker = by_name["tools/call dump_request", "SpanKind.CLIENT"]
    assert hex_id(router["parent_id"]) == format(gateway.context.span_id, "016x")
    assert hex_id(worker["parent_id"]) == hex_id(router["context"]["span_id"])
    router_resource = router["resource"]["attributes"]
    assert router_resource["service.name"] == "raybus-router"
    assert router_resource["process.pid"] == router_pid != os.getpid()
    assert worker["resource"]["attributes"]["service.name"] == "raybus-worker"
