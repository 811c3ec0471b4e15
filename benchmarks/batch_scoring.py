"""Batch scoring rows/s: a Ray Dataset scored through the bus with ``ToolCaller``, beside
two anchors on the same rows and the same server (``testkit``'s ``echo``), in one run.

* ToolCaller: ``ds.map_batches(ToolCaller, ...)``, 2 actors, each at most 64 calls in
  flight, through the bus (Ray backend, 1 worker) - what a data team would write.
* in-process SDK UDF (the anchor): a plain Ray Data callable class that hosts the same
  server object in each actor and calls it through the official SDK's in-memory
  ``Client``, same actors, same concurrency: the cost of MCP itself, no bus.
* row by row: the driver awaiting ``BusClient.call_tool`` once per row, one at a time
  (fewer rows: it is slow by construction).

Measured as row B10 of ``raybus bench`` (:mod:`benchmarks.data`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import mcp
import pyarrow as pa
import ray

from cluster.client import BusClient
from cluster.data.loop import LoopThread

ROWS = 10_000  # at the default duration; `--duration-s` scales it down
ROW_BY_ROW_ROWS = 500
ACTORS = 2
MAX_CONCURRENCY = 64
BATCH_SIZE = 256


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


def dataset(rows: int) -> Any:
    return ray.data.from_items([{"text": f"row {i}"} for i in range(rows)]).materialize()


def rows_per_s(ds: Any, udf: type, kwargs: dict[str, Any]) -> float:
    """Score ``ds`` with ``udf`` on an actor pool; rows/s including the actors' start."""
    rows: int = ds.count()
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
    if scored.count() != rows:
        raise RuntimeError(f"scored {scored.count()} of {rows} rows")
    return rows / elapsed


async def row_by_row(client: BusClient, rows: int) -> float:
    """rows/s of the driver awaiting ``call_tool`` once per row, one at a time."""
    started = time.perf_counter()
    for i in range(rows):
        await client.call_tool("echo", {"text": f"row {i}"})
    return rows / (time.perf_counter() - started)
