"""What ``raybus config check`` says about a bus's ``triggers:`` without starting them.

Two problems a trigger would otherwise meet only at ``raybus up``, each one line led by
its field: a ``map:`` that does not import as a callable (imported in a bounded child
process, as the pools' servers are), and a ``tool:`` that no pool offers, said only when
every pool's tool names are known without starting it (otherwise nothing can be said).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from cluster.config import BusConfig, field_path
from cluster.namespaces import pool_exposure

__all__ = ["trigger_problems"]

MapProbe = Callable[[Sequence[str], float], list[str | None]]


def trigger_problems(
    config: BusConfig,
    own_tools: Mapping[str, Sequence[str]],
    probe_maps: MapProbe,
    timeout_s: float,
) -> list[str]:
    """One line per problem, led by ``triggers[i].map`` or ``triggers[i].tool``.

    Args:
        own_tools: pool name -> the tool names its server lists (pools not known: absent).
        probe_maps: imports ``map:`` paths elsewhere; None per path that imports.
    """
    problems: list[str] = []
    mapped = [(index, t.map) for index, t in enumerate(config.triggers) if t.map is not None]
    verdicts = probe_maps([path for _, path in mapped], timeout_s) if mapped else []
    for (index, _), problem in zip(mapped, verdicts, strict=True):
        if problem is not None:
            where = field_path(("triggers", index, "map"))
            problems.append(f"{where}: {problem}")
    offered = _public_tools(config, own_tools)
    if offered is None:
        return problems
    for index, trigger in enumerate(config.triggers):
        if trigger.tool not in offered:
            where = field_path(("triggers", index, "tool"))
            known = ", ".join(sorted(offered)) or "none"
            problems.append(f"{where}: no pool offers {trigger.tool!r} (offered: {known})")
    return problems


def _public_tools(config: BusConfig, own_tools: Mapping[str, Sequence[str]]) -> set[str] | None:
    """Every tool name the bus would offer, or None when some pool's are not known."""
    offered: set[str] = set()
    for pool in config.pools:
        if pool.name not in own_tools:
            return None
        exposure = pool_exposure(config, pool)
        shown = (tool for tool in own_tools[pool.name] if exposure.shows_tool(tool))
        offered.update(exposure.public_name(tool) for tool in shown)
    return offered
