"""One tool call through the whole bus, per backend: Ray (default), Kafka, SQS.

BusClient -> backend -> worker (SDK ``echo`` tool) -> backend -> BusClient, one worker.
Reports sequential latency (p50 / p99 of 200 calls) and throughput at 64 concurrent
callers (1,000 calls). Kafka and the SQS endpoint (moto) are started for the run unless
``RAYBUS_KAFKA_BOOTSTRAP`` / ``RAYBUS_SQS_ENDPOINT`` name running ones.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks._local_ray import on_local_ray
from benchmarks.kafka_latency import _broker
from benchmarks.sqs_latency import _endpoint
from cluster.bus import launch_bus, stop_bus
from cluster.client import BusClient
from cluster.config import parse_config

SEQUENTIAL = 200
CONCURRENT = 1000
CALLERS = 64


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _measure_backend(name: str, extra: dict[str, Any]) -> list[tuple[str, str]]:
    config = parse_config(
        {
            "name": f"lat-{name}",
            "pools": [
                {"name": "kit", "server": "cluster.examples.testkit:server", "max_concurrency": 64}
            ],
            "autoscaler": {"enabled": False},
            **extra,
        }
    )
    await launch_bus(config)
    client = await BusClient.connect(config.name)
    try:
        for i in range(20):  # warm up
            await client.call_tool("echo", {"text": str(i)})
        samples = []
        for i in range(SEQUENTIAL):
            started = time.perf_counter()
            await client.call_tool("echo", {"text": str(i)})
            samples.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        results = await client.map_tool_calls(
            [("echo", {"text": str(i)}) for i in range(CONCURRENT)], concurrency=CALLERS
        )
        rate = CONCURRENT / (time.perf_counter() - started)
        failed = sum(1 for r in results if isinstance(r, Exception))
    finally:
        await client.close()
        await stop_bus(config.name)
    latency = f"p50 {_percentile(samples, 0.5):6.2f} ms   p99 {_percentile(samples, 0.99):6.2f} ms"
    return [
        (f"{name}: one caller", latency),
        (f"{name}: {CALLERS} callers", f"{rate:8,.0f} calls/s ({failed} failed)"),
    ]


async def _measure() -> list[tuple[str, str]]:
    rows = await _measure_backend("ray", {})
    async with _broker() as bootstrap:
        rows += await _measure_backend(
            "kafka", {"backend": "kafka", "kafka": {"bootstrap": bootstrap}}
        )
    async with _endpoint() as endpoint:
        sqs = {
            "endpoint_url": endpoint,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        rows += await _measure_backend("sqs", {"backend": "sqs", "sqs": sqs})
    return rows


def run() -> list[tuple[str, str]]:
    return on_local_ray(_measure)
