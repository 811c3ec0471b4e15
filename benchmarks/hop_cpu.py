"""CPU per call of each bus process: where the Ray backend's cost of a call lands.

A profiling aid for the hot path, not a ``raybus bench`` row: it starts its own local
Ray and a bus of 2 workers hosting ``benchmarks.server:server``, drives a fixed number
of ``echo`` calls from ``--callers`` concurrent callers on one in-process
:class:`~cluster.client.BusClient` (B5's load), and prints, per round, calls/s and the
CPU milliseconds per call of each process group (router, workers, the client's
endpoint, the driver, Ray's own daemons), read from ``/proc`` before and after.

Per-call CPU is the robust figure on a shared machine (a busy neighbour slows a round,
but barely changes what each call costs); compare checkouts by running this from each,
alternately, in one session::

    python -m benchmarks.hop_cpu --calls 4000 --rounds 3 --json

``--py-spy SECONDS`` also records a worker (and the router) with ``py-spy record --gil``
during the last round and writes flame graphs to the current directory (py-spy must be
on PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray

from benchmarks.measure import percentile
from benchmarks.processes import descendants, snapshot
from benchmarks.workloads import running_bus
from cluster.client import BusClient
from cluster.local_ray import start_local_ray
from cluster.naming import NAMESPACE

__all__ = ["main", "measure_round"]

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")

_ECHO = {"text": "x"}
# Labels of the processes worth telling apart; everything else in the tree is "other".
_GROUPS = {
    "ray::RouterActor": "router",
    "ray::WorkerActor": "workers",
    "ray::ClientEndpoint": "endpoint",
    "ray::ControlActor": "control",  # discovery, supervisor, autoscaler
    "raylet": "raylet",
    "gcs_server": "gcs",
}


def _cpu_by_group() -> tuple[dict[str, float], dict[str, list[int]]]:
    cpu: dict[str, float] = defaultdict(float)
    pids: dict[str, list[int]] = defaultdict(list)
    for info in snapshot(descendants()):
        group = _GROUPS.get(info.label, "other")
        cpu[group] += info.cpu_s
        pids[group].append(info.pid)
    own = snapshot([os.getpid()])
    cpu["driver"] = own[0].cpu_s if own else 0.0
    return dict(cpu), dict(pids)


async def measure_round(client: BusClient, calls: int, callers: int) -> dict[str, Any]:
    """``calls`` echo calls shared by ``callers`` closed-loop callers; CPU ms per call."""
    left = calls
    errors = 0
    latencies_ms: list[float] = []

    async def caller() -> None:
        nonlocal left, errors
        while left > 0:
            left -= 1
            started = time.perf_counter()
            result = await client.call_tool("echo", _ECHO)
            latencies_ms.append((time.perf_counter() - started) * 1000)
            if getattr(result, "is_error", False):
                errors += 1

    before, pids = _cpu_by_group()
    threads_before = _thread_cpu(pids)
    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - started
    after, _ = _cpu_by_group()
    threads_after = _thread_cpu(pids)
    per_call = {g: (after.get(g, 0.0) - before.get(g, 0.0)) * 1000 / calls for g in after}
    per_thread = {
        t: (threads_after[t] - threads_before.get(t, 0.0)) * 1000 / calls for t in threads_after
    }
    return {
        "calls": calls,
        "errors": errors,
        "elapsed_s": round(elapsed, 3),
        "calls_per_s": round(calls / elapsed, 1),
        "p50_ms": round(percentile(latencies_ms, 0.5) or 0.0, 2),
        "p99_ms": round(percentile(latencies_ms, 0.99) or 0.0, 2),
        "cpu_ms_per_call": {g: round(v, 4) for g, v in sorted(per_call.items())},
        "thread_cpu_ms_per_call": {t: round(v, 4) for t, v in sorted(per_thread.items()) if v},
    }


def _thread_cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds per (process group, thread name): Python's loop vs Ray's own threads."""
    cpu: dict[str, float] = defaultdict(float)
    for group in ("router", "workers"):
        for pid in pids.get(group, []):
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    name = (task / "comm").read_text().strip()
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                ticks = int(fields[11]) + int(fields[12])
                cpu[f"{group}:{re.sub(r'[0-9]+$', '', name)}"] += ticks / _TICKS_PER_S
    return dict(cpu)


def _py_spy(pid: int, seconds: float, name: str) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy")
    if exe is None:
        print("py-spy not found on PATH: no profile", file=sys.stderr)
        return None
    out = f"{name}-{pid}.txt"
    return subprocess.Popen(
        [
            exe,
            "record",
            "--gil",
            "--nonblocking",
            "-p",
            str(pid),
            "-d",
            str(int(seconds)),
            "-f",
            "raw",
            "-o",
            out,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _run(args: argparse.Namespace) -> list[dict[str, Any]]:
    config = {
        "name": f"hopcpu-{uuid.uuid4().hex[:6]}",
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
    rounds = []
    async with running_bus(config) as client:
        await measure_round(client, min(args.calls, 1000), args.callers)  # warm up
        for number in range(args.rounds):
            spies: list[subprocess.Popen[bytes]] = []
            if args.py_spy and number == args.rounds - 1:
                _, pids = _cpu_by_group()
                for group in ("workers", "router"):
                    for pid in pids.get(group, [])[:1]:
                        spy = _py_spy(pid, args.py_spy, group)
                        if spy is not None:
                            spies.append(spy)
            result = await measure_round(client, args.calls, args.callers)
            for spy in spies:
                spy.wait(timeout=args.py_spy + 60)
            rounds.append(result)
            if not args.json:
                print(json.dumps(result), flush=True)
    return rounds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hop_cpu", description=__doc__)
    parser.add_argument("--calls", type=int, default=4000, help="calls per round")
    parser.add_argument("--callers", type=int, default=64, help="concurrent callers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--label", default="", help="a name for this checkout in the output")
    parser.add_argument("--json", action="store_true", help="one JSON object at the end")
    parser.add_argument("--py-spy", type=float, default=0.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    start_local_ray(os.cpu_count() or 2, namespace=NAMESPACE)
    try:
        rounds = asyncio.run(_run(args))
    finally:
        ray.shutdown()
    if args.json:
        print(json.dumps({"label": args.label, "rounds": rounds}))


if __name__ == "__main__":
    main()
