"""B8: 10,000 calls in flight - what they cost in memory, and whether other calls slow.

A bus of 2 workers with room for every call at once (6,000 slots each) is loaded with
N calls of ``hold``, which wait without CPU until the bench opens their gate. Once they
all run in the workers (``hold`` counts them, so this is later than the router handing
them over), one caller measures ``echo`` p50/p99 for the round's duration and the
resident memory of every process of the bus is read; then the held calls are released
together and their answers drained. Done at N = 100 (the
anchor) and N = 10,000: the ratio is p99 at 10,000 over p99 at 100, and "stable" is
read as at most 2x. Memory is reported per process: idle, with 10,000 in flight, and
after they were answered.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from typing import Any

from benchmarks.measure import closed_loop
from benchmarks.processes import ProcessInfo, descendants, snapshot
from benchmarks.report import Row, side_from_rounds
from benchmarks.server import waiting_at
from benchmarks.workloads import BenchContext, Family, Workload, running_bus
from cluster.client import BusClient

__all__ = ["INFLIGHT"]

B8 = Workload("B8", "10,000 calls in flight: echo p99, memory", "p99 stable (<= 2x)")
LEVELS = (100, 10_000)
_STABLE_RATIO = 2.0
_SLOTS_PER_WORKER = 6_000
# Bounds that stop a hang, far above what filling and draining take on a loaded machine.
_FILL_BOUND_S = 120.0
_DRAIN_BOUND_S = 180.0


def _bus_processes() -> list[ProcessInfo]:
    """This process (the driver, holding the BusClient) and every Ray process under it."""
    infos = snapshot([os.getpid(), *descendants()])
    return [p for p in infos if p.label != "ray::IDLE"]


# Ray's own processes, as opposed to the bus's actors and its driver.
_RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
_RAY_SYSTEM = "Ray's own (gcs, raylet, agents, monitors)"


def _memory_by_label(infos: list[ProcessInfo]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for info in infos:
        if info.pid == os.getpid():
            label = "driver (BusClient)"
        elif info.label.startswith("ray::") and info.label not in _RAY_AGENTS:
            label = info.label
        else:
            label = _RAY_SYSTEM
        totals[label] += info.rss_mib
        counts[label] += 1
    return {
        (
            f"{label} x{counts[label]}" if counts[label] > 1 and label != _RAY_SYSTEM else label
        ): round(mib, 1)
        for label, mib in sorted(totals.items())
    }


async def _level(ctx: BenchContext, client: BusClient, bus: str, count: int) -> dict[str, Any]:
    """Hold ``count`` calls in flight, probe echo meanwhile, release them, drain."""
    gate = ctx.workdir / f"{bus}-release-{count}"
    arguments = {"gate": str(gate), "timeout_s": _FILL_BOUND_S + _DRAIN_BOUND_S}

    async def held() -> float:
        await client.call_tool("hold", arguments, timeout_s=_FILL_BOUND_S + _DRAIN_BOUND_S)
        return time.monotonic()

    started = time.monotonic()
    calls = [asyncio.create_task(held()) for _ in range(count)]
    try:
        while (seen := waiting_at(gate)) < count:
            if time.monotonic() - started > _FILL_BOUND_S:
                raise RuntimeError(
                    f"only {seen} of {count} calls in flight after {_FILL_BOUND_S:.0f} s"
                )
            if ended := [c for c in calls if c.done()]:
                raise RuntimeError(f"a held call ended early: {ended[0].exception()!r}")
            await asyncio.sleep(0.25)  # polling the workers' counts
        filled_s = time.monotonic() - started
        probe = await closed_loop(
            [lambda: client.call_tool("echo", {"text": "probe"})], ctx.duration_s
        )
        during = _bus_processes()
    finally:
        gate.touch()  # releases every held call, also when the measurement failed
        released = time.monotonic()
    async with asyncio.timeout(_DRAIN_BOUND_S):
        answered = await asyncio.gather(*calls, return_exceptions=True)
    ends = [t for t in answered if isinstance(t, float)]
    return {
        "probe": probe,
        "during": during,
        "filled_s": filled_s,
        "failed": count - len(ends),
        "drained_s": max(ends) - released if ends else None,
    }


async def _run(ctx: BenchContext) -> None:
    name = ctx.bus_name("inflight")
    config = {
        "name": name,
        "pools": [
            {
                "name": "bench",
                "server": "benchmarks.server:server",
                "min_workers": 2,
                "max_workers": 2,
                "max_concurrency": _SLOTS_PER_WORKER,
            }
        ],
        "autoscaler": {"enabled": False},
        # Room for the held calls should a worker fall behind taking them.
        "router": {"max_pending_per_pool": 2 * max(LEVELS)},
    }
    ctx.progress("launching a bus of 2 workers with 6,000 slots each")
    async with running_bus(config) as client:
        await closed_loop([lambda: client.call_tool("echo", {"text": "warm"})], 1.0)
        idle = _bus_processes()
        levels: dict[int, dict[str, Any]] = {}
        for count in LEVELS:
            ctx.progress(f"B8: {count:,} calls in flight")
            levels[count] = await _level(ctx, client, name, count)
        after = _bus_processes()
    low, high = (levels[n] for n in LEVELS)
    raybus = side_from_rounds(f"echo at {LEVELS[1]:,} in flight", [high["probe"]], figure="p99")
    anchor = side_from_rounds(f"echo at {LEVELS[0]:,} in flight", [low["probe"]], figure="p99")
    row = Row.compared(B8.id, B8.title, B8.goal, "ms p99", raybus, anchor, latency_at="1 caller")
    failed = low["failed"] + high["failed"]
    row.met = (row.ratio or float("inf")) <= _STABLE_RATIO and not failed and not raybus.errors
    memory = {
        "idle": _memory_by_label(idle),
        f"{LEVELS[1]:,} in flight": _memory_by_label(high["during"]),
        "after": _memory_by_label(after),
    }
    row.details = {
        "rss_mib": memory,
        "fill_s": {n: levels[n]["filled_s"] for n in LEVELS},
        "drained_s": {n: levels[n]["drained_s"] for n in LEVELS},
        "held_calls_failed": failed,
    }
    total = {stage: sum(v.values()) for stage, v in memory.items()}
    stages = list(memory)
    row.notes = [
        f"resident MiB, idle -> {stages[1]} -> after: total "
        + " -> ".join(f"{total[s]:,.0f}" for s in stages),
        *(
            f"  {label}: " + " -> ".join(f"{memory[s].get(label, 0):,.0f}" for s in stages)
            for label in memory[stages[1]]
        ),
        f"{LEVELS[1]:,} calls in flight after {high['filled_s']:.1f} s; released together, "
        f"all answered {high['drained_s'] or 0:.1f} s later; {failed} held calls failed",
    ]
    ctx.emit(row)


INFLIGHT = Family("inflight", (B8,), _run)
