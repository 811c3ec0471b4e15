"""Shared helpers for tests that run a real bus on the session's local Ray."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cluster.bus import launch_bus, stop_bus
from cluster.client import BusClient
from cluster.config import BusConfig, parse_config


def bus_config(pools: list[dict[str, Any]], **extra: Any) -> BusConfig:
    """A uniquely named bus with fast heartbeats (tests wait on discovery)."""
    return parse_config(
        {
            "name": f"t{uuid.uuid4().hex[:8]}",
            "pools": pools,
            "discovery": {"heartbeat_interval_s": 0.2, "ttl_s": 1.5},
            "drain_timeout_s": 30,
            # Tests that count workers must not see them change: opt in where wanted.
            "autoscaler": {"enabled": False},
            **extra,
        }
    )


@asynccontextmanager
async def running_bus(config: BusConfig) -> AsyncIterator[BusClient]:
    await launch_bus(config)
    client = await BusClient.connect(config.name)
    try:
        yield client
    finally:
        await client.close()
        await stop_bus(config.name)
