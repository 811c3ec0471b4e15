"""B10: Ray Data batch scoring through the bus, against the same UDF without a bus.

A 10,000-row Dataset (scaled by ``--duration-s``) scored by ``map_batches`` with
``cluster.data.ToolCaller`` (2 actors, 64 calls in flight each, a 1-worker pool), beside
the anchor: the same actors hosting the SDK server in-process and calling it through the
SDK's own client. The driver awaiting ``BusClient.call_tool`` row by row is reported
beside them. One measurement per side (a job includes starting its actors).
"""

from __future__ import annotations

import asyncio

from benchmarks.batch_scoring import (
    ACTORS,
    MAX_CONCURRENCY,
    ROW_BY_ROW_ROWS,
    ROWS,
    InProcessEcho,
    dataset,
    row_by_row,
    rows_per_s,
)
from benchmarks.report import Row, Side
from benchmarks.workloads import BenchContext, Family, Skip, Workload, running_bus

__all__ = ["DATA"]

B10 = Workload("B10", "Ray Data batch scoring (ToolCaller)", "reported (anchor: in-process UDF)")


async def _run(ctx: BenchContext) -> None:
    try:
        from cluster.data import ToolCaller
    except ImportError as exc:  # ray[data] missing from this environment
        raise Skip(f"Ray Data is not available: {exc}") from None
    rows = max(500, int(ROWS * ctx.scale))
    name = ctx.bus_name("data")
    pool = {
        "name": "kit",
        "server": "cluster.examples.testkit:server",
        "min_workers": 1,
        "max_workers": 1,
        "max_concurrency": 128,
    }
    async with running_bus({"name": name, "pools": [pool]}) as client:
        ctx.progress(f"B10: scoring {rows:,} rows through the bus and in-process")
        ds = await asyncio.to_thread(dataset, rows)
        kwargs = {
            "bus": name,
            "tool": "echo",
            "arguments": {"text": "text"},
            "max_concurrency": MAX_CONCURRENCY,
        }
        through_bus = await asyncio.to_thread(rows_per_s, ds, ToolCaller, kwargs)
        anchor = await asyncio.to_thread(rows_per_s, ds, InProcessEcho, {})
        one_by_one = await row_by_row(client, max(50, int(ROW_BY_ROW_ROWS * ctx.scale)))
    row = Row.compared(
        B10.id,
        B10.title,
        B10.goal,
        "rows/s",
        Side("ToolCaller", through_bus, per_round=[through_bus]),
        Side("in-process SDK UDF", anchor, per_round=[anchor]),
    )
    row.details = {"row_by_row_rows_per_s": one_by_one, "rows": rows, "actors": ACTORS}
    row.notes = [
        f"{rows:,} rows, {ACTORS} actors x {MAX_CONCURRENCY} calls in flight; "
        f"BusClient.call_tool row by row: {one_by_one:,.0f} rows/s "
        f"({one_by_one / through_bus:.2f}x ToolCaller)"
    ]
    ctx.emit(row)


DATA = Family("data", (B10,), _run)
