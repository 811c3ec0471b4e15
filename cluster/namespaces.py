"""Tool namespaces and filters of a bus's pools, and the names two pools both claim.

A pool's :class:`~actors.discovery.exposure.PoolExposure` (its ``namespace``, the bus's
``namespace_separator``, its ``include`` / ``exclude`` filters) is applied by its workers
(see that module); here it is built from the configuration, and clashes are told:

- at start (:func:`~cluster.bus.launch_bus`, so ``raybus up``): once every pool's workers
  registered, a tool or prompt name two pools offer ends start-up with
  :class:`NameCollision`, one line naming the name and both pools (a resource URI two
  pools list is served by the first, as at run time);
- in ``raybus config check``: the same for pools whose tool names are known without
  starting them (an SDK ``MCPServer`` object or a module of functions);
- at run time (a server's list changed): discovery keeps the first owner, logs a warning
  and ``raybus status`` shows the clash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from actors.discovery.catalog import Collision, Kind
from actors.discovery.exposure import PoolExposure
from cluster.config import BusConfig, PoolConfig
from transports.errors import BusError

__all__ = ["NameCollision", "first_collision", "pool_exposure", "static_collisions"]


class NameCollision(BusError):
    """Two pools offer the same tool or prompt name (no namespaces keep them apart)."""

    def __init__(self, kind: str, name: str, first: str, second: str) -> None:
        super().__init__(kind, name, first, second)
        self.kind = kind
        self.name = name
        self.pools = (first, second)

    def __str__(self) -> str:
        first, second = self.pools
        return (
            f"{self.kind} {self.name!r} is offered by pools {first!r} and {second!r}: "
            "give one of them a namespace, or exclude the tool from one"
        )


def pool_exposure(config: BusConfig, pool: PoolConfig) -> PoolExposure:
    """How ``pool``'s workers show their server on ``config``'s bus."""
    return PoolExposure(
        namespace=pool.namespace,
        separator=config.namespace_separator,
        include=tuple(pool.include),
        exclude=tuple(pool.exclude),
    )


def first_collision(collisions: Iterable[Collision], pools: Sequence[str]) -> NameCollision | None:
    """The error for a tool or prompt clash found at start, or None.

    Which pool registered first is a race at start: the error names the pools in
    configuration order (``pools``), and the first clashing tool (then prompt) by name.
    Resource URIs are the servers' own addresses, never namespaced (see
    :mod:`actors.discovery.exposure`): the same server under two namespaces lists the same
    URIs, which is no reason to refuse to start. The first pool serves them.
    """
    position = {pool: index for index, pool in enumerate(pools)}
    found: list[tuple[bool, str, str, str]] = []
    for clash in collisions:
        if clash.kind in (Kind.TOOL, Kind.PROMPT):
            first, second = sorted(
                (clash.owner, clash.other), key=lambda pool: position.get(pool, len(position))
            )
            found.append((clash.kind == Kind.PROMPT, clash.name, first, second))
    if not found:
        return None
    is_prompt, name, first, second = min(found)
    return NameCollision(Kind.PROMPT if is_prompt else Kind.TOOL, name, first, second)


def static_collisions(
    config: BusConfig, own_tools: Mapping[str, Iterable[str]]
) -> list[tuple[str, NameCollision]]:
    """Clashes among pools whose servers' own tool names are known without starting them.

    Args:
        own_tools: pool name -> the tool names its server lists (pools not known: absent).

    Returns:
        (the later pool's name, its clash), in configuration order.
    """
    # Pools of different regions offering one name are regional replicas (README "Regions").
    regions = config.router.regions
    region_of = regions.pool_regions.get if regions is not None else lambda _: None
    owners: dict[tuple[str, str | None], str] = {}
    found: list[tuple[str, NameCollision]] = []
    for pool in config.pools:
        if pool.name not in own_tools:
            continue
        exposure = pool_exposure(config, pool)
        for own in own_tools[pool.name]:
            if not exposure.shows_tool(own):
                continue
            public = exposure.public_name(own)
            owner = owners.setdefault((public, region_of(pool.name)), pool.name)
            if owner != pool.name:
                found.append((pool.name, NameCollision(Kind.TOOL, public, owner, pool.name)))
    return found
