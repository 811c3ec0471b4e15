"""`raybus up --metrics-port`: the bus's metrics as Prometheus text, as a user reads them.

The bus runs on the session's Ray; `raybus up --address` attaches to it in a subprocess
(one local Ray at a time) and serves the gateway and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2 as httpx
import mcp
import pytest
import ray
import yaml
from mcp.client.stdio import StdioServerParameters

from cluster.cli import build_parser
from cluster.config import BusConfig
from tests.cluster.bus_helpers import bus_config, running_bus
from tests.cluster.metrics.prometheus_text import Page, parse
from tests.cluster.test_up_cli import cli_env, free_port
from transports.errors import CallError

KIT = {"name": "kit", "server": "cluster.examples.testkit:server", "max_workers": 1}
# Calls leave the gateway and router at once; the supervisor's gauges come with its first
# lag reading. The bound is patience for a cold, loaded 2-core machine.
PATIENCE_S = 90.0


def metrics_config() -> BusConfig:
    return bus_config(
        [KIT],
        autoscaler={"enabled": True},  # a pool of 1..1: every decision holds
        gateway={"port": 0, "max_body_bytes": 1024},
    )


def write_yaml(config: BusConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_unset=True)))
    return path


@asynccontextmanager
async def raybus_up(*args: str, cache_dir: Path) -> AsyncIterator[dict[str, str]]:
    """`raybus up ARGS` attached to the session's Ray; yields the URLs it announced."""
    address = ray.get_runtime_context().gcs_address
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "cluster.cli", "up", *args, "--address", address),
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(cache_dir),
    )
    urls: dict[str, str] = {}
    try:
        assert process.stderr is not None
        async with asyncio.timeout(120):
            while not {"metrics", "MCP"} <= urls.keys():
                line = (await process.stderr.readline()).decode()
                assert line, "raybus up exited before serving"
                for what in ("metrics", "MCP"):
                    if line.startswith(f"raybus: serving {what} at "):
                        urls[what] = line.split(" at ", 1)[1].strip()
        yield urls
        process.terminate()
        async with asyncio.timeout(120):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def scrape_until(url: str, ready: Callable[[Page], bool]) -> Page:
    """The page once ``ready`` holds for it (bounded by PATIENCE_S)."""
    async with httpx.AsyncClient() as http, asyncio.timeout(PATIENCE_S):
        while True:
            response = await http.get(url)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            page = parse(response.text)
            if ready(page):
                return page
            await asyncio.sleep(0.2)  # polling the page: the autoscaler's round is periodic


@pytest.mark.ray
@pytest.mark.slow
async def test_up_serves_calls_scaling_and_refusals_of_the_bus(
    ray_session: None, tmp_path: Path
) -> None:
    config = metrics_config()
    port = free_port()
    bus_yaml = write_yaml(config, tmp_path / "bus.yaml")
    async with (
        running_bus(config) as client,
        raybus_up(str(bus_yaml), "--metrics-port", str(port), cache_dir=tmp_path) as urls,
    ):
        assert urls["metrics"] == f"http://127.0.0.1:{port}/metrics"
        for i in range(3):
            await client.call_tool("echo", {"text": str(i)})
        for _ in range(2):
            assert (await client.call_tool("fail", {"reason": "no"})).is_error
        with pytest.raises(CallError):
            await client.call_tool("nope", {})
        async with httpx.AsyncClient() as http:
            foreign = await http.post(urls["MCP"], headers={"host": "evil.example"})
            assert foreign.status_code == 403
            oversize = await http.post(urls["MCP"], content=b"x" * 2048)
            assert oversize.status_code == 413

        def complete(page: Page) -> bool:
            return (
                page.value("raybus_pool_lag", pool="kit") is not None
                and page.total("raybus_scaling_decisions_total") >= 1
                and page.total("raybus_requests_total") >= 6
                and page.total("raybus_gateway_refused_total") >= 2
            )

        page = await scrape_until(urls["metrics"], complete)
    bus = {"bus": config.name}
    requests = "raybus_requests_total"
    assert page.value(requests, **bus, pool="kit", tool="echo", outcome="ok") == 3
    assert page.value(requests, **bus, pool="kit", tool="fail", outcome="tool_error") == 2
    assert page.value(requests, **bus, pool="-", tool="-", outcome="unroutable") == 1
    assert page.total(requests) == 6
    assert page.value("raybus_request_latency_seconds_count", **bus, pool="kit") == 5
    assert page.value("raybus_request_latency_seconds_bucket", pool="kit", le="+Inf") == 5
    assert page.types["raybus_request_latency_seconds"] == "histogram"
    assert page.value("raybus_breaker_state", **bus, pool="kit") == 0
    assert page.value("raybus_pool_workers", **bus, pool="kit") == 1
    assert page.value("raybus_pool_lag", **bus, pool="kit") == 0
    holds = page.value("raybus_scaling_decisions_total", **bus, pool="kit", direction="hold")
    assert holds is not None
    assert holds >= 1
    refused = "raybus_gateway_refused_total"
    assert page.value(refused, **bus, reason="host_or_origin") == 1
    assert page.value(refused, **bus, reason="body_too_large") == 1
    up = {s["source"].split("/")[0]: v for _, s, v in page.samples if "source" in s}
    assert up == {"router": 1, "supervisor": 1, "autoscaler": 1, "gateway": 1}
    assert all(labels.get("bus") == config.name for _, labels, _ in page.samples)


@pytest.mark.ray
@pytest.mark.slow
async def test_up_stdio_serves_the_metrics_of_its_own_gateway(
    ray_session: None, tmp_path: Path
) -> None:
    config = bus_config([KIT])  # no autoscaler: no such source on the page
    port = free_port()
    bus_yaml = write_yaml(config, tmp_path / "bus.yaml")
    address = ray.get_runtime_context().gcs_address
    up = ["-m", "cluster.cli", "up", "--stdio", str(bus_yaml), "--address", address]
    params = StdioServerParameters(
        command=sys.executable,
        args=[*up, "--metrics-port", str(port)],
        env=cli_env(tmp_path),
    )
    async with (
        running_bus(config),
        asyncio.timeout(180),
        mcp.Client(params, mode="legacy") as client,
    ):
        with pytest.raises(mcp.MCPError):
            await client.call_tool("echo", {"text": 7})  # the schema wants a string
        url = f"http://127.0.0.1:{port}/metrics"
        page = await scrape_until(url, lambda p: p.total("raybus_gateway_refused_total") >= 1)
    assert page.value("raybus_gateway_refused_total", reason="invalid_arguments") == 1
    up_rows = {s["source"]: v for _, s, v in page.samples if "source" in s}
    assert up_rows == {"router": 1, "supervisor": 1, "gateway": 1}


def test_the_metrics_port_must_be_a_port_number() -> None:
    parser = build_parser()
    assert parser.parse_args(["up", "b.yaml", "--metrics-port", "0"]).metrics_port == 0
    for bad in ("70000", "http"):
        with pytest.raises(SystemExit):
            parser.parse_args(["up", "b.yaml", "--metrics-port", bad])
