"""Tool calls per second through the bus, side by side with two anchors, in one run.

* bus: BusClient -> router actor -> worker actor (SDK ``testkit`` server, ``echo``) ->
  client endpoint actor -> BusClient, with 1 and 2 workers, 1 and 64 concurrent callers.
* bare Ray: the same number of actor hops with no MCP at all and no batching (driver ->
  relay actor -> echo actor -> back), one Ray call per message per hop: the naive design
  the bus's batching is meant to beat.
* SDK in-memory: the official ``mcp`` Client calling the same server object in-process:
  the cost of MCP itself, with no transport.

Run with ``make bench`` or ``python -m benchmarks bus``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import mcp
import ray

from benchmarks._local_ray import on_local_ray
from cluster.bus import launch_bus, stop_bus
from cluster.client import BusClient
from cluster.config import parse_config
from cluster.examples.testkit import server as testkit_server

CALLS = {1: 300, 64: 3000}


@ray.remote
class _Echo:
    async def echo(self, text: str) -> str:
        return text


@ray.remote
class _Relay:
    def __init__(self, target: Any) -> None:
        self._target = target

    async def forward(self, text: str) -> str:
        result: str = await self._target.echo.remote(text)
        return result


async def _rate(call: Callable[[int], Awaitable[object]], concurrency: int) -> float:
    total = CALLS[concurrency]
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with slots:
            await call(i)

    await asyncio.gather(*(one(i) for i in range(min(20, total))))  # warm up
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(total)))
    return total / (time.perf_counter() - started)


async def _bus_rates(workers: int) -> dict[int, float]:
    config = parse_config(
        {
            "name": f"bench{workers}",
            "pools": [
                {
                    "name": "kit",
                    "server": "cluster.examples.testkit:server",
                    "min_workers": workers,
                    "max_workers": workers,
                    "max_concurrency": 64,
                }
            ],
        }
    )
    await launch_bus(config)
    client = await BusClient.connect(config.name)
    try:

        async def call(i: int) -> object:
            return await client.call_tool("echo", {"text": str(i)})

        return {c: await _rate(call, c) for c in CALLS}
    finally:
        await client.close()
        await stop_bus(config.name)


async def _bare_ray_rates() -> dict[int, float]:
    relay = _Relay.remote(_Echo.remote())  # type: ignore[attr-defined]

    async def call(i: int) -> object:
        return await relay.forward.remote(str(i))

    return {c: await _rate(call, c) for c in CALLS}


async def _sdk_rates() -> dict[int, float]:
    async with mcp.Client(testkit_server) as client:

        async def call(i: int) -> object:
            return await client.call_tool("echo", {"text": str(i)})

        return {c: await _rate(call, c) for c in CALLS}


async def _measure() -> list[tuple[str, str]]:
    bus = {w: await _bus_rates(w) for w in (1, 2)}
    bare = await _bare_ray_rates()
    sdk = await _sdk_rates()
    rows = [("", "calls/s    vs bare Ray   vs SDK in-memory")]
    for concurrency in CALLS:
        for workers in (1, 2):
            rate = bus[workers][concurrency]
            ratios = f"{rate / bare[concurrency]:9.2f}x   {rate / sdk[concurrency]:9.2f}x"
            rows.append(
                (f"bus, {workers} worker(s), {concurrency} caller(s)", f"{rate:8,.0f}    {ratios}")
            )
        rows.append((f"bare Ray 3-hop echo, {concurrency} caller(s)", f"{bare[concurrency]:8,.0f}"))
        rows.append((f"SDK in-memory Client, {concurrency} caller(s)", f"{sdk[concurrency]:8,.0f}"))
    return rows


def run() -> list[tuple[str, str]]:
    return on_local_ray(_measure)
