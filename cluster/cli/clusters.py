"""Which Ray cluster a command joins, and joining it (``--address``, or found).

With ``--address`` a command joins that cluster. Without it, a named bus is looked for
first among the buses ``raybus up`` runs on this machine, each on a Ray of its own (see
:mod:`cluster.cli.local_buses`), and otherwise on ``auto``: the cluster this machine
belongs to, as ``ray start`` set it up. ``raybus status`` without a name looks at all of
them: ``auto`` and every ``raybus up`` Ray.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

import ray

from cluster.cli.failures import fail, report
from cluster.cli.join import ClusterUnreachable, join_cluster
from cluster.cli.local_buses import local_bus_address, local_bus_auth_mode, local_buses
from transports.errors import BusError

__all__ = [
    "AUTO",
    "Joiner",
    "add_address_argument",
    "address_for",
    "candidate_addresses",
    "run_joined",
]

AUTO = "auto"


def address_for(bus: str | None, explicit: str | None) -> str:
    """The cluster to join for ``bus`` (see the module docstring)."""
    if explicit:
        return explicit
    local = local_bus_address(bus) if bus else None
    return local if local is not None else AUTO


def candidate_addresses(explicit: str | None) -> list[str]:
    """Every cluster a bus may run on: ``auto`` and each ``raybus up`` Ray (or ``--address``)."""
    if explicit:
        return [explicit]
    return [AUTO, *dict.fromkeys(local_buses().values())]


def _join(address: str) -> None:
    """Join ``address`` (raises ConnectionError, with the reason, when that fails: the
    address is probed first, so nothing listening there is told in about a second)."""
    if address != AUTO:
        _use_auth_mode_of(address)
    # Ray's "connecting to ... connected" lines are noise on a command's stderr; -v keeps
    # them (main sets the root level from it).
    level = logging.getLogger().getEffectiveLevel()
    try:
        join_cluster(address, logging_level=level)
    except ClusterUnreachable as exc:
        raise ConnectionError(exc.reason) from None


def _use_auth_mode_of(address: str) -> None:
    # A local Ray started by ray.init() requires its token, and Ray turns token auth on in
    # a joining driver only for address "auto": a driver joining a `raybus up` Ray by
    # address is told the mode that Ray's start chose (recorded beside its address).
    modes = {local_bus_auth_mode(bus) for bus, at in local_buses().items() if at == address}
    mode = next((m for m in modes if m is not None), None)
    if mode is None or "RAY_AUTH_MODE" in os.environ:
        return
    os.environ["RAY_AUTH_MODE"] = mode
    # Ray read the variable when it was imported, so its config is re-read, as Ray's own
    # ray.init does when it turns token auth on.
    from ray._raylet import Config  # type: ignore[attr-defined]

    Config.initialize("")


class Joiner:
    """Keeps this process joined to one cluster at a time, switching only when asked for
    another (``raybus status --watch`` over several clusters)."""

    def __init__(self) -> None:
        self._joined: set[str] = set()  # the address asked for, and where it led

    def join(self, address: str) -> str:
        """Be joined to ``address``; returns the cluster's GCS address.

        Raises:
            ConnectionError: no Ray cluster answers there.
        """
        if address not in self._joined:
            self.leave()
            _join(address)
            self._joined = {address, ray.get_runtime_context().gcs_address}
        return str(ray.get_runtime_context().gcs_address)

    def leave(self) -> None:
        if ray.is_initialized():
            ray.shutdown()
        self._joined = set()


Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def run_joined(handler: Handler, args: argparse.Namespace) -> int:
    """Join the bus's cluster, run ``handler`` there, leave; bus errors end in one line."""
    address = address_for(getattr(args, "bus", None), args.address)
    try:
        _join(address)
    except ConnectionError as exc:
        return fail(f"cannot join the Ray cluster at {address!r}: {exc}", 2)
    try:
        return asyncio.run(handler(args))
    except BusError as exc:
        return report(exc, 1)
    finally:
        ray.shutdown()


def add_address_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (default: the Ray of a `raybus up` of that bus on this "
        "machine, else auto)",
    )
