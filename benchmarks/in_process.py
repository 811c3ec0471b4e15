"""B4-B5: a Python caller in the bus's own process tree against the SDK's in-memory client.

raybus side: ``BusClient`` (this process) -> router -> one of 2 workers hosting
``benchmarks.server:server`` -> back, the ``echo`` tool. Anchor: ``mcp.Client(server)``
on the same server object in this process - MCP with no transport at all, the least a
call can cost. B4 is one caller (latency: what the bus adds to each call), B5 is 64
concurrent callers on one client each side (throughput).
"""

from __future__ import annotations

import os

import mcp

from benchmarks.measure import Call
from benchmarks.processes import descendants
from benchmarks.report import Row, comparison_notes, side_from_rounds
from benchmarks.server import server
from benchmarks.workloads import BenchContext, Family, Workload, compare_loops, running_bus

__all__ = ["IN_PROCESS"]

B4 = Workload("B4", "in-process client, 1 caller, echo", "p50 added <= 1 ms")
B5 = Workload("B5", "in-process client, 64 callers, echo", ">= 1.0x")
_CALLERS = {"B4": 1, "B5": 64}
_ADDED_MS_GOAL = 1.0
_RATE_GOAL = 1.0
_RAYBUS = "BusClient -> router -> 2 workers"
_SDK = "SDK in-memory mcp.Client(server)"
_ECHO = {"text": "x"}


def _cpu_groups() -> dict[str, list[int]]:
    return {"bench process": [os.getpid()], "ray": descendants()}


async def _run(ctx: BenchContext) -> None:
    config = {
        "name": ctx.bus_name("inproc"),
        "pools": [
            {
                "name": "bench",
                "server": "benchmarks.server:server",
                "min_workers": 2,
                "max_workers": 2,
            }
        ],
        "autoscaler": {"enabled": False},
    }
    ctx.progress("launching a bus of 2 workers")
    async with running_bus(config) as bus, mcp.Client(server) as sdk:
        targets: dict[str, Call] = {
            "raybus": lambda: bus.call_tool("echo", _ECHO),
            "sdk": lambda: sdk.call_tool("echo", _ECHO),
        }
        for workload in (B4, B5):
            if not ctx.wants(workload):
                continue
            count = _CALLERS[workload.id]
            ctx.progress(f"{workload.id}: {ctx.rounds} rounds x {ctx.duration_s:g} s per side")
            results = await compare_loops(
                targets,
                callers=count,
                duration_s=ctx.duration_s,
                rounds=ctx.rounds,
                groups=_cpu_groups,
            )
            if workload is B4:
                raybus = side_from_rounds(_RAYBUS, results["raybus"], figure="p50")
                anchor = side_from_rounds(_SDK, results["sdk"], figure="p50")
                row = Row.compared(
                    B4.id, B4.title, B4.goal, "ms", raybus, anchor, latency_at="1 caller"
                )
                added = (raybus.value or 0) - (anchor.value or 0)
                row.met = added <= _ADDED_MS_GOAL and not raybus.errors
                row.details = {"added_p50_ms": added}
                row.notes = [f"raybus adds {added:.2f} ms to the p50 of a call"]
            else:
                raybus = side_from_rounds(_RAYBUS, results["raybus"])
                anchor = side_from_rounds(_SDK, results["sdk"])
                row = Row.compared(
                    B5.id, B5.title, B5.goal, "calls/s", raybus, anchor, latency_at="64 callers"
                )
                row.met = (row.ratio or 0) >= _RATE_GOAL and not raybus.errors
            row.notes += comparison_notes(raybus, anchor)
            ctx.emit(row)


IN_PROCESS = Family("in-process", (B4, B5), _run)
