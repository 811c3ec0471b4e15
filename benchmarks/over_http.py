"""B1-B3: official MCP clients over Streamable HTTP, raybus against the SDK serving alone.

raybus side: ``raybus up`` of a bus whose pool hosts ``benchmarks.server:server``,
joined to the bench's Ray (``--address``), serving on a free port. Anchor: the same
server object served by the SDK itself under uvicorn (``benchmarks.serving``), one
process. The clients (``mcp.Client(url)``) run in a load generator process of their own;
every round records the CPU each process group used (load generator, raybus - its
gateway, Ray and actor processes - and the SDK server), since on two cores the clients'
CPU is taken from the servers'.

- B1 / B2: 64 clients call ``echo`` / ``spin(5 ms)`` in a closed loop, rounds interleaved.
- B3: 300 calls of ``spin(100 ms)`` shared by 60 clients against a pool of 1..6 workers
  (autoscaled with the product's defaults) and against one SDK process; one burst per
  side, since a burst changes the pool it measures. The ideal is the CPU work divided
  by the cores: 300 x 0.1 s / 2 = 15 s here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.loadgen import LoadGenerator
from benchmarks.measure import RoundResult, interleaved
from benchmarks.processes import descendants
from benchmarks.report import Row, comparison_notes, side_from_rounds
from benchmarks.serving import Served, sdk_server_argv, served
from benchmarks.workloads import (
    SPARE_READY_S,
    BenchContext,
    Family,
    Workload,
    tree_except,
    warm_spare_ready,
    with_cpu,
)
from cluster.bus import bus_status
from transports.errors import BusError

__all__ = ["BURST", "HTTP_LOOPS"]

SERVER = "benchmarks.server:server"
CLIENTS = 64
POOL_WORKERS = 2
BURST_CLIENTS = 60
BURST_CALLS = 300
BURST_TOOL_MS = 100.0
BURST_POOL = (1, 6)

B1 = Workload("B1", "HTTP echo, 64 clients", ">= 1.0x")
B2 = Workload("B2", "HTTP 5 ms CPU tool, 64 clients", ">= 1.5x")
B3 = Workload(
    "B3",
    "burst 300 x 100 ms CPU, 60 clients, pool 1..6",
    ">= 1.5x, wall <= 1.3x CPU work/cores",
)
_GOAL_RATIO = {"B1": 1.0, "B2": 1.5, "B3": 1.5}
_BURST_IDEAL_FACTOR = 1.3
_RAYBUS = f"raybus up, {POOL_WORKERS} workers"
_SDK = "SDK Streamable HTTP (uvicorn), 1 process"


def _raybus_up(ctx: BenchContext, config: dict[str, Any]) -> list[str]:
    path: Path = ctx.write_config(config)
    return [
        sys.executable,
        "-m",
        "cluster.cli",
        "up",
        str(path),
        "--address",
        ctx.ray_address,
        "--port",
        "0",
    ]


@dataclass
class _Servers:
    bus: str
    raybus: Served
    sdk: Served
    load: LoadGenerator
    protocols: dict[str, str | None]

    def cpu_groups(self) -> dict[str, list[int]]:
        return {
            "raybus": tree_except(self.load.pid, self.sdk.pid),
            "sdk": [self.sdk.pid, *descendants(self.sdk.pid)],
        }

    async def round(self, target: str, **command: Any) -> RoundResult:
        return await with_cpu(self.cpu_groups, lambda: self.load.round(target=target, **command))


@contextlib.asynccontextmanager
async def _servers(
    ctx: BenchContext, pool: dict[str, Any], clients: int
) -> AsyncIterator[_Servers]:
    name = ctx.bus_name("http")
    config = {"name": name, "pools": [{"name": "bench", "server": SERVER, **pool}]}
    ctx.progress(f"starting `raybus up` (bus {name}), the SDK's server and {clients} x 2 clients")
    async with (
        served(_raybus_up(ctx, config), what="raybus up") as raybus,
        served(sdk_server_argv(SERVER), what="the SDK's HTTP server") as sdk,
        LoadGenerator() as load,
    ):
        protocols: dict[str, str | None] = {}
        for target, url in (("raybus", raybus.url), ("sdk", sdk.url)):
            answer = await load.request(op="connect", target=target, url=url, clients=clients)
            protocols[target] = answer.get("protocol")
        yield _Servers(name, raybus, sdk, load, protocols)


async def _run_loops(ctx: BenchContext) -> None:
    pool = {"min_workers": POOL_WORKERS, "max_workers": POOL_WORKERS}
    async with _servers(ctx, pool, CLIENTS) as servers:
        for workload, tool, arguments in ((B1, "echo", {"text": "x"}), (B2, "spin", {"ms": 5})):
            if not ctx.wants(workload):
                continue
            ctx.progress(f"{workload.id}: {ctx.rounds} rounds x {ctx.duration_s:g} s per side")
            loop = {"op": "loop", "tool": tool, "arguments": arguments}
            for target in ("raybus", "sdk"):  # warm-up: first calls pay imports and caches
                await servers.load.round(target=target, duration_s=min(1.0, ctx.duration_s), **loop)
            results = await interleaved(
                ctx.rounds,
                {
                    target: functools.partial(
                        servers.round, target, duration_s=ctx.duration_s, **loop
                    )
                    for target in ("raybus", "sdk")
                },
            )
            raybus = side_from_rounds(_RAYBUS, results["raybus"])
            anchor = side_from_rounds(_SDK, results["sdk"])
            row = Row.compared(
                workload.id,
                workload.title,
                workload.goal,
                "calls/s",
                raybus,
                anchor,
                latency_at=f"{CLIENTS} clients",
            )
            row.met = (row.ratio or 0) >= _GOAL_RATIO[workload.id] and not raybus.errors
            protocols = servers.protocols
            row.notes = [
                f"raybus = {_RAYBUS}; anchor = {_SDK}; protocol {protocols}",
                *comparison_notes(raybus, anchor),
            ]
            ctx.emit(row)


async def _watch_pool(bus: str, started: float, seen: dict[str, float]) -> None:
    """Record the largest pool size and when the first added worker was routed."""
    while True:
        with contextlib.suppress(BusError):
            workers = (await bus_status(bus))["pools"].get("bench", {}).get("workers", 0)
            seen["max_workers"] = max(seen.get("max_workers", 0), workers)
            if workers > BURST_POOL[0]:
                seen.setdefault("first_added_s", time.monotonic() - started)
        await asyncio.sleep(0.5)  # sampling period of the status figures


async def _run_burst(ctx: BenchContext) -> None:
    calls = max(BURST_CLIENTS, round(BURST_CALLS * ctx.scale))
    low, high = BURST_POOL
    # The tool is CPU-bound and says so: the autoscaler's ceiling follows the free CPUs.
    pool = {"min_workers": low, "max_workers": high, "num_cpus": 1}
    async with _servers(ctx, pool, BURST_CLIENTS) as servers:
        command = {
            "op": "burst",
            "tool": "spin",
            "arguments": {"ms": BURST_TOOL_MS},
            "calls": calls,
        }
        spare = await warm_spare_ready(servers.bus)
        ctx.progress(f"B3: a burst of {calls} calls on raybus, then on the SDK")
        seen: dict[str, float] = {}
        watcher = asyncio.create_task(_watch_pool(servers.bus, time.monotonic(), seen))
        try:
            on_raybus = await servers.round("raybus", **command)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        on_sdk = await servers.round("sdk", **command)
    ideal_s = calls * BURST_TOOL_MS / 1000 / ctx.cores
    raybus = side_from_rounds(f"raybus up, pool {low}..{high}", [on_raybus])
    anchor = side_from_rounds(_SDK, [on_sdk])
    row = Row.compared(
        B3.id, B3.title, B3.goal, "calls/s", raybus, anchor, latency_at=f"{BURST_CLIENTS} clients"
    )
    within = on_raybus.elapsed_s <= _BURST_IDEAL_FACTOR * ideal_s
    row.met = (row.ratio or 0) >= _GOAL_RATIO["B3"] and within and not raybus.errors
    row.details = {
        "calls": calls,
        "raybus_wall_s": on_raybus.elapsed_s,
        "sdk_wall_s": on_sdk.elapsed_s,
        "ideal_wall_s": ideal_s,
        "pool": seen,
        "warm_spare_ready": spare,
    }
    first = seen.get("first_added_s")
    row.notes = [
        f"{calls} calls; wall: raybus {on_raybus.elapsed_s:.1f} s, SDK {on_sdk.elapsed_s:.1f} s, "
        f"CPU work / {ctx.cores} cores {ideal_s:.1f} s "
        f"(raybus at {on_raybus.elapsed_s / ideal_s:.2f}x of it)",
        f"pool reached {seen.get('max_workers', '?')} workers"
        + (f", first added worker routed at {first:.1f} s" if first is not None else "")
        + ("" if spare else f"; the warm spare was not up within {SPARE_READY_S:g} s"),
        *comparison_notes(raybus, anchor),
    ]
    ctx.emit(row)


HTTP_LOOPS = Family("http", (B1, B2), _run_loops)
BURST = Family("burst", (B3,), _run_burst)
