"""Batch scoring rows/s: a Ray Dataset scored through the bus with ``ToolCaller``, beside
two anchors on the same rows and the same server (``testkit``'s ``echo``), in one run.

* ToolCaller: ``ds.map_batches(ToolCaller, ...)``, 2 actors, each at most 64 calls in
  flight, through the bus (Ray backend, 1 worker) - what a data team would write.
* in-process SDK UDF (the anchor): a plain Ray Data callable class that hosts the same
  server object in each actor and calls it through the official SDK's in-memory
  ``Client``, same actors, same concurrency: the cost of MCP itself, no bus.
* row by row: the driver awaiting ``BusClient.call_tool`` once per row, one at a time
  (fewer rows: it is slow by construction).

Run with ``make bench`` or ``python -m benchmarks batch``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import mcp
import pyarrow as pa
import ray

from benchmarks._local_ray import on_local_ray
from cluster.bus import launch_bus, stop_bus
from cluster.client import BusClient
from cluster.config import parse_config
from cluster.data import ToolCaller
from cluster.data.loop import LoopThread

ROWS = 10_000
ROW_BY_ROW_ROWS = 500
ACTORS = 2
MAX_CONCURRENCY = 64
BATCH_SIZE = 256
BUS = "bench-batch"


class InProcessEcho:
    """The anchor: the SDK server in this actor, called through the SDK's own Client."""

    def __init__(self, max_concurrency: int = MAX_CONCURRENCY) -> None:
        from cluster.examples.testkit import server

        self._loop = LoopThread()
        self._stop: asyncio.Event | None = None
        self._client: mcp.Client = self._loop.run(self._open(server))
        self._max_concurrency = max_concurrency

    async def _open(self, server: Any) -> mcp.Client:
        opened: asyncio.Future[mcp.Client] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()

        async def hold() -> None:  # the SDK's client is entered and exited in one task
            async with mcp.Client(server) as client:
                opened.set_result(client)
                assert self._stop is not None
                await self._stop.wait()

        self._holder = asyncio.get_running_loop().create_task(hold())
        return await opened

    async def _score(self, texts: list[str]) -> list[str]:
        slots = asyncio.Semaphore(self._max_concurrency)

        async def one(text: str) -> str:
            async with slots:
                result = await self._client.call_tool("echo", {"text": text})
                return str(result.structured_content)

        return await asyncio.gather(*(one(t) for t in texts))

    def __call__(self, batch: pa.Table) -> pa.Table:
        results = self._loop.run(self._score(batch.column("text").to_pylist()))
        return batch.append_column("result", pa.array(results, pa.string()))


def _dataset() -> Any:
    rows = [{"text": f"row {i}"} for i in range(ROWS)]
    return ray.data.from_items(rows).materialize()


def _rows_per_s(ds: Any, udf: type, kwargs: dict[str, Any]) -> float:
    started = time.perf_counter()
    scored = ds.map_batches(
        udf,
        fn_constructor_kwargs=kwargs,
        batch_format="pyarrow",
        batch_size=BATCH_SIZE,
        compute=ray.data.ActorPoolStrategy(size=ACTORS),
        num_cpus=0.25,
    ).materialize()
    elapsed = time.perf_counter() - started
    assert scored.count() == ROWS
    return ROWS / elapsed


async def _row_by_row() -> float:
    client = await BusClient.connect(BUS)
    try:
        started = time.perf_counter()
        for i in range(ROW_BY_ROW_ROWS):
            await client.call_tool("echo", {"text": f"row {i}"})
        return ROW_BY_ROW_ROWS / (time.perf_counter() - started)
    finally:
        await client.close()


async def _measure() -> list[tuple[str, str]]:
    config = parse_config(
        {
            "name": BUS,
            "pools": [
                {
                    "name": "kit",
                    "server": "cluster.examples.testkit:server",
                    "min_workers": 1,
                    "max_workers": 1,
                    "max_concurrency": 128,
                }
            ],
        }
    )
    await launch_bus(config)
    try:
        ds = _dataset()
        bus_kwargs = {
            "bus": BUS,
            "tool": "echo",
            "arguments": {"text": "text"},
            "max_concurrency": MAX_CONCURRENCY,
        }
        # Each includes starting its actors (~1-2 s), as a job would.
        through_bus = await asyncio.to_thread(_rows_per_s, ds, ToolCaller, bus_kwargs)
        anchor = await asyncio.to_thread(_rows_per_s, ds, InProcessEcho, {})
        row_by_row = await _row_by_row()
    finally:
        await stop_bus(BUS)
    return [
        ("", "rows/s     vs in-process SDK UDF"),
        (
            f"ToolCaller through the bus, {ROWS:,} rows",
            f"{through_bus:8,.0f}   {through_bus / anchor:8.2f}x",
        ),
        (f"in-process SDK UDF (anchor), {ROWS:,} rows", f"{anchor:8,.0f}"),
        (
            f"BusClient.call_tool row by row, {ROW_BY_ROW_ROWS} rows",
            f"{row_by_row:8,.0f}   {row_by_row / anchor:8.2f}x",
        ),
        ("Ray Data version", ray.__version__),
    ]


def run() -> list[tuple[str, str]]:
    return on_local_ray(_measure)
