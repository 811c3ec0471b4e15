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

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from cluster.config import BusConfig
from cluster.ray_actors.autoscaler import AutoscalerActor
from cluster.ray_actors.discovery import DiscoveryActor
from cluster.ray_actors.restarts import DeferredStart, deferring_starts, start_itself
from cluster.ray_actors.supervisor import SupervisorActor

__all__ = ["ControlActor", "hosts_autoscaler"]

logger = logging.getLogger(__name__)


def hosts_autoscaler(config: BusConfig) -> bool:
    """Does the bus run an autoscaler (some pool autoscales)?"""
    return config.autoscaler.enabled and any(p.autoscale.enabled for p in config.pools)


class ControlActor:
    def __init__(self, config: BusConfig) -> None:
        builds: dict[str, Callable[[BusConfig], Any]] = {
            "discovery": DiscoveryActor,
            "supervisor": SupervisorActor,
        }
        if hosts_autoscaler(config):
            builds["autoscaler"] = AutoscalerActor
        self._parts: dict[str, Any] = {}
        # After a Ray restart each part asks for its start (see restarts): one call
        # starts them all, sent again while any has not begun.
        self._starts: list[tuple[str, DeferredStart]] = []
        for part, build in builds.items():
            with deferring_starts() as starts:
                self._parts[part] = build(config)
            self._starts += [(part, start) for start in starts]
        if self._starts:
            start_itself("start_parts", lambda: all(s.begun() for _, s in self._starts))

    async def start_parts(self) -> None:
        """After a Ray restart: each part's start that has not begun, side by side."""
        pending = [(part, start) for part, start in self._starts if not start.begun()]
        outcomes = await asyncio.gather(
            *(getattr(self._parts[part], s.method)(**s.kwargs) for part, s in pending),
            return_exceptions=True,
        )
        for (part, start), outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                logger.error("%s.%s after a restart failed: %r", part, start.method, outcome)

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
