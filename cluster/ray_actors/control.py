"""One process for a bus's discovery, supervisor and autoscaler.

None of the three is on a call's path (the router is, and keeps its own process), and
every Ray actor is a Python process of its own: about a second of CPU at each start on
a 2-core machine, for Ray's import and ours. Hosting them together saves two of those.

Each part keeps its own name: :func:`cluster.naming.get_actor` of a part's name gives a
:class:`~cluster.naming.ControlPart`, used like that actor's handle; its calls arrive
here through :meth:`ControlActor.call`. Ray restarts the process as a whole
(``max_restarts=-1``): each part's constructor picks up after a restart as it did alone
(:mod:`cluster.ray_actors.restarts`).
"""

from __future__ import annotations

import inspect
from typing import Any

from cluster.config import BusConfig
from cluster.ray_actors.autoscaler import AutoscalerActor
from cluster.ray_actors.discovery import DiscoveryActor
from cluster.ray_actors.restarts import hosting
from cluster.ray_actors.supervisor import SupervisorActor

__all__ = ["ControlActor", "hosts_autoscaler"]


def hosts_autoscaler(config: BusConfig) -> bool:
    """Does the bus run an autoscaler (some pool autoscales)?"""
    return config.autoscaler.enabled and any(p.autoscale.enabled for p in config.pools)


class ControlActor:
    def __init__(self, config: BusConfig) -> None:
        self._parts: dict[str, Any] = {}
        with hosting("discovery"):
            self._parts["discovery"] = DiscoveryActor(config)
        with hosting("supervisor"):
            self._parts["supervisor"] = SupervisorActor(config)
        if hosts_autoscaler(config):
            with hosting("autoscaler"):
                self._parts["autoscaler"] = AutoscalerActor(config)

    async def call(self, part: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """``method(*args, **kwargs)`` of ``part``, as a call to that actor would be.

        Raises:
            AttributeError: no such part, or no such public method.
        """
        if method.startswith("_") or part not in self._parts:
            raise AttributeError(f"the control process has no {part}.{method}")
        result = getattr(self._parts[part], method)(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result
