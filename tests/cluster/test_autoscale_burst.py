"""A burst on real Ray: the autoscaler decides to grow the pool, every call is answered
exactly once, and the pool settles back to its minimum.

What is asserted is what the autoscaler decided and what the calls returned, never how
fast: worker start-up on a cold, loaded 2-core machine can take longer than the burst
itself. How fast the pool grows and drains is a benchmark figure (``raybus bench`` B9).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cluster.bus import bus_status
from tests.cluster.bus_helpers import bus_config, running_bus

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CALLS = 300
TARGET_PER_WORKER = 8
MIN_WORKERS, MAX_WORKERS = 1, 6
# Each call holds its slot this long, so one worker (8 slots) needs at least
# CALLS / 8 * NAP_S = 18.75 s for the burst: the autoscaler (a round every 0.25 s,
# 0.5 s upscale delay) sees the queue long before it drains, on any machine.
NAP_S = 0.5
# Bounds on waiting, sized for a cold, loaded 2-core machine (a worker start there can
# take tens of seconds); they stop a hang, they do not measure speed.
SETTLE_S = 180.0


async def _pool_workers(bus: str) -> int:
    workers: int = (await bus_status(bus))["pools"]["kit"]["workers"]
    return workers


async def _decisions(bus: str) -> list[dict[str, Any]]:
    decisions: list[dict[str, Any]] = (await bus_status(bus))["decisions"]
    return [d for d in decisions if d["pool"] == "kit"]


async def test_a_burst_grows_the_pool_every_call_is_answered_once_and_it_shrinks_back(
    ray_session: None, tmp_path: Path
) -> None:
    pool = {
        "name": "kit",
        "server": "cluster.examples.testkit:server",
        "min_workers": MIN_WORKERS,
        "max_workers": MAX_WORKERS,
        "max_concurrency": 8,
        "autoscale": {
            "target_per_worker": TARGET_PER_WORKER,
            "upscale_delay_s": 0.5,
            "downscale_window_s": 2,
            "max_step_down": 5,
        },
    }
    config = bus_config([pool], autoscaler={"enabled": True, "interval_s": 0.25})
    executions = tmp_path / "executions"
    tokens = [f"call-{i}" for i in range(CALLS)]
    async with running_bus(config) as client:
        calls = [
            ("record", {"path": str(executions), "token": token, "seconds": NAP_S})
            for token in tokens
        ]
        results = await client.map_tool_calls(calls, concurrency=CALLS, timeout_s=SETTLE_S)

        # Every call answered exactly once, with its own answer: none missing, none
        # duplicated, none mixed up, and each tool run happened once.
        assert [r.structured_content for r in results] == [{"result": t} for t in tokens]  # type: ignore[union-attr]
        assert sorted(executions.read_text().split()) == sorted(tokens)

        # What the autoscaler decided: 300 calls at 8 per worker want 38 workers, so it
        # scaled up, to at least 4 and never past max_workers.
        ups = [d for d in await _decisions(config.name) if d["desired"] > d["current"]]
        assert ups, "no scale-up decision for a burst of 300 calls"
        assert all(d["desired"] <= MAX_WORKERS for d in ups)
        peak = max(ups, key=lambda d: d["desired"])
        assert peak["desired"] >= min(MAX_WORKERS, 4), peak
        assert peak["raw_desired"] >= 4, peak  # the load behind it, before clamping
        assert peak["desired"] == min(MAX_WORKERS, peak["current"] + 8, peak["raw_desired"])

        # Then the pool settles: the resize to the decided size runs to completion (the
        # autoscaler holds a pool while its resize converges, so a later scale-down
        # decision starts from that size), and after the burst it shrinks back to its
        # minimum. Bounded, generously: this is not a timing test.
        async with asyncio.timeout(SETTLE_S):
            while True:
                decisions = await _decisions(config.name)
                later = [d for d in decisions if d["at_s"] > peak["at_s"]]
                downs = [d for d in later if d["desired"] < d["current"]]
                if downs and await _pool_workers(config.name) == MIN_WORKERS:
                    break
                await asyncio.sleep(0.25)  # polling the bus from outside
        assert downs[0]["current"] == peak["desired"], (peak, downs[0])
        assert downs[-1]["desired"] == MIN_WORKERS
