"""A real bus's page, collected as ``raybus up --metrics-port`` collects it (in this
process, over the session's Ray): who records what, on each backend, counted once.

- Kafka and SQS: calls never pass the router, so the workers that ran them count them.
- Every pool, autoscaled or not, has its workers and lag, from one owner (the supervisor),
  also when the autoscaler runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from cluster.config import BusConfig
from cluster.metrics.endpoint import MetricsCollector
from cluster.metrics.sources import bus_sources
from tests.cluster.bus_helpers import bus_config, running_bus
from tests.cluster.metrics.prometheus_text import Page, parse

KIT = {"name": "kit", "server": "cluster.examples.testkit:server"}
CALC = {"name": "calc", "server": "cluster.examples.calculator:server"}
# Bounds on waiting for a cold, loaded 2-core machine; they measure nothing. The pools'
# lag is read every 5 s.
PATIENCE_S = 120.0


async def scrape_until(config: BusConfig, ready: Callable[[Page], bool]) -> Page:
    """The bus's page once ``ready`` holds for it (bounded by PATIENCE_S)."""
    collector = MetricsCollector(config.name, bus_sources(config), max_age_s=0)
    async with asyncio.timeout(PATIENCE_S):
        while True:
            page = parse(await collector.page())
            if ready(page):
                return page
            await asyncio.sleep(0.2)  # polling: counts and readings arrive on their own


def sources_up(page: Page) -> dict[str, float]:
    """Each kind of source (``worker/ab12`` -> ``worker``) and whether all answered."""
    up: dict[str, float] = {}
    for _, labels, value in page.samples:
        if "source" in labels:
            kind = labels["source"].split("/")[0]
            up[kind] = min(value, up.get(kind, 1.0))
    return up


@pytest.fixture(
    params=[
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("sqs", marks=pytest.mark.sqs),
    ]
)
def broker(request: pytest.FixtureRequest, ray_session: None) -> dict[str, Any]:
    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        return {"backend": "kafka", "kafka": {"bootstrap": bootstrap, "partitions": 2}}
    endpoint = request.getfixturevalue("sqs_endpoint")
    credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return {"backend": "sqs", "sqs": {"endpoint_url": endpoint, **credentials}}


@pytest.mark.ray
@pytest.mark.slow
async def test_broker_workers_count_each_call_they_end_exactly_once(
    broker: dict[str, Any],
) -> None:
    pool = {**KIT, "min_workers": 2, "max_workers": 2, "max_concurrency": 4}
    config = bus_config([pool], **broker)
    async with running_bus(config) as client:
        for i in range(3):
            await client.call_tool("echo", {"text": str(i)})
        for _ in range(2):
            assert (await client.call_tool("fail", {"reason": "no"})).is_error
        page = await scrape_until(
            config,
            lambda p: (
                p.total("raybus_requests_total") >= 5
                and p.value("raybus_pool_workers", pool="kit") == 2
                and p.value("raybus_pool_lag", pool="kit") is not None
            ),
        )
    bus = {"bus": config.name}
    requests = "raybus_requests_total"
    assert page.value(requests, **bus, pool="kit", tool="echo", outcome="ok") == 3
    assert page.value(requests, **bus, pool="kit", tool="fail", outcome="tool_error") == 2
    assert page.total(requests) == 5
    assert page.value("raybus_request_latency_seconds_count", **bus, pool="kit") == 5
    assert page.value("raybus_request_latency_seconds_bucket", pool="kit", le="+Inf") == 5
    # The router saw none of these calls; both workers answered the scrape.
    assert sources_up(page) == {"router": 1, "supervisor": 1, "worker": 1}
    assert (
        len([s for s in page.series("raybus_metrics_source_up") if "worker/" in s["source"]]) == 2
    )


@pytest.mark.ray
@pytest.mark.slow
async def test_a_fixed_pool_has_workers_and_lag_and_no_gauge_is_counted_twice(
    ray_session: None,
) -> None:
    # kit: one worker taking one call at a time, never autoscaled: naps queue behind it.
    fixed = {**KIT, "min_workers": 1, "max_concurrency": 1, "autoscale": {"enabled": False}}
    scaled = {**CALC, "min_workers": 1, "max_workers": 1}  # autoscaled 1..1: always holds
    config = bus_config([fixed, scaled], autoscaler={"enabled": True})
    async with running_bus(config) as client:
        for _ in range(2):
            await client.call_tool("add", {"a": 1, "b": 2})
        naps = [asyncio.create_task(client.call_tool("nap", {"seconds": 600})) for _ in range(3)]
        try:
            # One nap runs on kit's only slot, two wait at the router.
            page = await scrape_until(
                config,
                lambda p: (
                    p.value("raybus_pool_lag", pool="kit") == 2
                    and p.value("raybus_pool_workers", pool="calc") is not None
                    and p.value("raybus_scaling_decisions_total", pool="calc", direction="hold")
                    is not None
                ),
            )
        finally:
            for nap in naps:
                nap.cancel()
            await asyncio.gather(*naps, return_exceptions=True)
    bus = {"bus": config.name}
    assert page.value("raybus_pool_workers", **bus, pool="kit") == 1
    assert page.value("raybus_pool_lag", **bus, pool="kit") == 2
    # The autoscaler runs for calc, yet its gauges are still one reading, not two.
    assert page.value("raybus_pool_workers", **bus, pool="calc") == 1
    assert page.value("raybus_pool_lag", **bus, pool="calc") == 0
    assert page.series("raybus_pool_workers") == [
        {**bus, "pool": "calc"},
        {**bus, "pool": "kit"},
    ]
    # On Ray the router counts every call, and nobody else does.
    assert page.value("raybus_requests_total", pool="calc", tool="add", outcome="ok") == 2
    assert page.total("raybus_requests_total") == 2
    assert sources_up(page) == {"router": 1, "supervisor": 1, "autoscaler": 1}
