"""A burst against an autoscaled pool: how fast it grows, drains the lag and shrinks.

800 calls of a 200 ms tool land at once on a pool of 1 worker (max 8, 8 calls per
worker). Reported from burst start: the first scale-up decision, the moment all 8
workers serve, the moment the queue is empty again, the last answer, and the moment the
pool is back at 1 worker (downscale window shortened to 5 s for the run; 30 s by default).
Anchors: Ray Serve's default upscale delay is 30 s and KEDA polls every 30 s.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks._local_ray import on_local_ray
from cluster.bus import bus_status, launch_bus, stop_bus
from cluster.client import BusClient
from cluster.config import parse_config

CALLS = 800
MAX_WORKERS = 8


async def _measure() -> list[tuple[str, str]]:
    config = parse_config(
        {
            "name": "burst",
            "pools": [
                {
                    "name": "kit",
                    "server": "cluster.examples.testkit:server",
                    "min_workers": 1,
                    "max_workers": MAX_WORKERS,
                    "max_concurrency": 8,
                    "autoscale": {
                        "target_per_worker": 8,
                        "downscale_window_s": 5,
                        "max_step_down": 8,
                    },
                }
            ],
            "autoscaler": {"interval_s": 0.25},
        }
    )
    await launch_bus(config)
    client = await BusClient.connect(config.name)
    marks: dict[str, float] = {}
    try:
        started = time.monotonic()
        calls = [("nap", {"seconds": 0.2}) for _ in range(CALLS)]
        async with asyncio.TaskGroup() as group:
            burst = group.create_task(
                client.map_tool_calls(calls, concurrency=CALLS, timeout_s=300)
            )
            while "shrunk" not in marks:
                status: dict[str, Any] = await bus_status(config.name)
                pool = status["pools"]["kit"]
                now = time.monotonic() - started
                if any(d["desired"] > d["current"] for d in status["decisions"]):
                    marks.setdefault("first scale-up decision", now)
                if pool["workers"] == MAX_WORKERS:
                    marks.setdefault(f"all {MAX_WORKERS} workers serving", now)
                if "first scale-up decision" in marks and pool["queued"] == 0:
                    marks.setdefault("lag back at zero", now)
                if burst.done():
                    marks.setdefault("last call answered", now)
                    if pool["workers"] == 1:
                        marks["shrunk"] = now
                if now > 120:
                    break
                await asyncio.sleep(0.1)  # sampling period
        failed = sum(1 for r in burst.result() if isinstance(r, Exception))
    finally:
        await client.close()
        await stop_bus(config.name)
    rows = [(label, f"{seconds:6.2f} s") for label, seconds in marks.items() if label != "shrunk"]
    rows.append(("back to 1 worker (window 5 s)", f"{marks.get('shrunk', float('nan')):6.2f} s"))
    rows.append(("calls failed", f"{failed} of {CALLS}"))
    return rows


def run() -> list[tuple[str, str]]:
    return on_local_ray(_measure)
