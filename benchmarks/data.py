"""B10 (to come): Ray Data batch scoring through the bus.

The place for the data teams' row: a Ray Data pipeline whose ``map_batches`` calls a
tool through ``cluster.data.ToolCaller`` with bounded concurrency, against the same
calls made with ``BusClient.map_tool_calls``. Until ``cluster.data`` exists the row
says so; fill in ``_run`` (and the goal) when it lands.
"""

from __future__ import annotations

import importlib.util

from benchmarks.workloads import BenchContext, Family, Skip, Workload

__all__ = ["DATA"]

B10 = Workload("B10", "Ray Data batch scoring (ToolCaller)", "to be set")


async def _run(ctx: BenchContext) -> None:
    if importlib.util.find_spec("cluster.data") is None:
        raise Skip("not written yet: waits for cluster.data.ToolCaller")
    raise Skip("cluster.data exists: write this row in benchmarks/data.py")


DATA = Family("data", (B10,), _run)
