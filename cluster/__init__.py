"""raybus on Ray: the public API, and the wiring behind it.

::

    from cluster import BusClient, load_config, launch_bus

    config = load_config("bus.yaml")
    await launch_bus(config)
    async with await BusClient.connect(config.name) as client:
        await client.call_tool("echo", {"text": "hi"})

Inside: ``config`` and ``naming``; ``bus`` (the composition root, the only place Ray
actor options are applied); ``client``; ``backends/`` (Ray, Kafka, SQS); ``ray_actors/``
(one Ray shell per core in ``actors/``); ``data/`` (Ray Data batch scoring,
``cluster.data.ToolCaller``); ``gateway/`` (MCP in front, with ``policy/``);
``cli/`` (the ``raybus`` command); ``services/`` (local Kafka and SQS); ``examples/``.

The names below load on first use, so ``import cluster`` (and ``raybus services``) does
not pay for importing Ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cluster.bus import bus_status, launch_bus, stop_bus
    from cluster.client import BusClient, IndexedOutcome
    from cluster.config import BusConfig, ConfigError, PoolConfig, load_config
    from transports.errors import BusError, BusErrorCode, CallError

__all__ = [
    "BusClient",
    "BusConfig",
    "BusError",
    "BusErrorCode",
    "CallError",
    "ConfigError",
    "IndexedOutcome",
    "PoolConfig",
    "bus_status",
    "launch_bus",
    "load_config",
    "stop_bus",
]

_HOMES = {
    "BusClient": "cluster.client",
    "IndexedOutcome": "cluster.client",
    "BusConfig": "cluster.config",
    "ConfigError": "cluster.config",
    "PoolConfig": "cluster.config",
    "load_config": "cluster.config",
    "bus_status": "cluster.bus",
    "launch_bus": "cluster.bus",
    "stop_bus": "cluster.bus",
    "BusError": "transports.errors",
    "BusErrorCode": "transports.errors",
    "CallError": "transports.errors",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'cluster' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
