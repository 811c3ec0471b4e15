"""Shared helpers for tests that run a real bus on the session's local Ray."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import ray
from ray.exceptions import RayError

from cluster.bus import launch_bus, stop_bus
from cluster.client import BusClient
from cluster.config import BusConfig, parse_config
from cluster.naming import NAMESPACE, actor_names


def bus_config(pools: list[dict[str, Any]], **extra: Any) -> BusConfig:
    """A uniquely named bus with fast heartbeats (tests wait on discovery)."""
    return parse_config(
        {
            "name": f"t{uuid.uuid4().hex[:8]}",
            "pools": pools,
            # Fast beats, but a live worker is never evicted because a loaded machine
            # delayed a few of them (1.5 s did evict one mid-burst, its calls lost).
            "discovery": {"heartbeat_interval_s": 0.2, "ttl_s": 5},
            "drain_timeout_s": 30,
            # Tests that count workers must not see them change: opt in where wanted.
            "autoscaler": {"enabled": False},
            **extra,
        }
    )


def slow_call_breaker(open_cooldown_s: float, window_s: float) -> dict[str, Any]:
    """Breaker settings a test opens with three calls of 0.2 s or more (``nap``)."""
    return {
        "minimum_calls": 3,
        "failure_rate_threshold": 0.75,
        "slow_call_threshold_s": 0.2,
        "slow_call_rate_threshold": 0.75,
        "open_cooldown_s": open_cooldown_s,
        "window_s": window_s,
    }


@asynccontextmanager
async def running_bus(config: BusConfig) -> AsyncIterator[BusClient]:
    await launch_bus(config)
    client = await BusClient.connect(config.name)
    try:
        yield client
    finally:
        await client.close()
        await stop_bus(config.name)


@asynccontextmanager
async def running_gateway(config: BusConfig, *, fixed_port: bool = False) -> AsyncIterator[str]:
    """Serve ``config``'s bus through the gateway on a free port; yields the MCP URL.

    With ``fixed_port`` the port is chosen before the gateway starts and configured as
    ``raybus up --port`` would: a replica that dies is replaced on the same port, so the
    URL stays valid across a gateway restart (with port 0 the replacement takes any).
    """
    from cluster.cli.up import serve  # here: only gateway tests need the HTTP stack
    from cluster.gateway.listener import bind_listener

    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    sock = bind_listener(config.gateway.host, 0) if fixed_port else None
    task = asyncio.create_task(
        serve(config, stdio=False, port=0, ready=port.set_result, stop=stop, sock=sock)
    )
    async with asyncio.timeout(60):
        chosen = await asyncio.shield(port)
    try:
        yield f"http://127.0.0.1:{chosen}/mcp"
    finally:
        stop.set()
        async with asyncio.timeout(60):
            await task
        if sock is not None:
            sock.close()  # closed already once the replicas took the port; not if it failed


def isolated_report(module: str, timeout_s: float = 300) -> dict[str, Any]:
    """Run ``python -m module`` (a check needing a Ray of its own, e.g. a two-node
    cluster, which cannot share this process with the session's local Ray); the JSON
    report it prints last."""
    completed = subprocess.run(
        [sys.executable, "-m", module],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return report


async def serving_replica_pid(bus: str) -> int | None:
    """The process of the bus's one gateway replica once it serves (None while there is
    none, or it is dead, or it has not bound its port yet)."""
    prefix = actor_names.gateway_prefix(bus)
    named: list[Any] = ray.util.list_named_actors(all_namespaces=True)
    names = [a["name"] for a in named if a["namespace"] == NAMESPACE]
    replicas = [name for name in names if name.startswith(prefix)]
    if len(replicas) != 1:
        return None
    try:
        handle: Any = ray.get_actor(replicas[0], namespace=NAMESPACE)
        if await handle.url.remote() is None:
            return None
        pid: int = await handle.__ray_call__.remote(lambda replica: os.getpid())
    except (RayError, ValueError):  # ValueError: the name was released meanwhile
        return None
    return pid
