"""Starting a Ray of its own on this machine: ``raybus up``, ``raybus demo``, the bench.

``address="local"`` always starts a new Ray: a bare ``ray.init()`` would join whatever
local Ray started last (another bus's, a notebook's), so unrelated buses would share one
cluster and its CPUs, and Ray refuses ``num_cpus`` when joining.

One setting differs from Ray's defaults, for start time only. The raylet starts its
object store on a thread and then connects to it; when the store's socket is not yet
listening, the connect sleeps ``raylet_client_connect_timeout_milliseconds`` before it
retries. At Ray's 1000 ms, half of the starts on a 2-core machine lost a whole second
there (six ``ray.init`` runs: three at 3.2 s, three at 2.2 s; the raylet's log shows the
second between the store's start and its object manager's). 100 ms x 100 attempts keeps
Ray's budget of 10 s before it gives up; six runs then took 2.0-2.2 s.
"""

from __future__ import annotations

from typing import Any

import ray

__all__ = ["LOCAL_RAY_SYSTEM_CONFIG", "start_local_ray"]

LOCAL_RAY_SYSTEM_CONFIG: dict[str, Any] = {
    "raylet_client_connect_timeout_milliseconds": 100,
    "raylet_client_num_connect_attempts": 100,
}


def start_local_ray(num_cpus: int | None, *, namespace: str | None = None) -> None:
    """Start a Ray of its own here, as every local bus runs (no dashboard, no log echo)."""
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        namespace=namespace,
        _system_config=LOCAL_RAY_SYSTEM_CONFIG,
    )
