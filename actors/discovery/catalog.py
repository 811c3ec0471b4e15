"""What an MCP server offers (tools, resources, templates, prompts) and where it lives.

A :class:`Catalog` holds the MCP wire objects as the server listed them. Workers send
its digest with every heartbeat and the catalog itself only when the digest changes.
:class:`CapabilityIndex` maps a tool, prompt or resource to the pool serving it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from transports.uri_template import UriTemplate

__all__ = ["CapabilityIndex", "Catalog", "Collision", "Kind", "UriTemplate"]

JSONObject = dict[str, Any]


class Kind:
    TOOL = "tool"
    PROMPT = "prompt"
    RESOURCE = "resource"


@dataclass(frozen=True)
class Catalog:
    tools: tuple[JSONObject, ...] = ()
    resources: tuple[JSONObject, ...] = ()
    resource_templates: tuple[JSONObject, ...] = ()
    prompts: tuple[JSONObject, ...] = ()
    digest: str = field(default="", compare=False)

    @classmethod
    def of(
        cls,
        *,
        tools: list[JSONObject] | None = None,
        resources: list[JSONObject] | None = None,
        resource_templates: list[JSONObject] | None = None,
        prompts: list[JSONObject] | None = None,
    ) -> Catalog:
        parts = (
            tuple(tools or ()),
            tuple(resources or ()),
            tuple(resource_templates or ()),
            tuple(prompts or ()),
        )
        canonical = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
        return cls(*parts, digest=hashlib.sha256(canonical).hexdigest()[:16])

    def names(self, kind: str) -> set[str]:
        if kind == Kind.TOOL:
            return {t["name"] for t in self.tools}
        if kind == Kind.PROMPT:
            return {p["name"] for p in self.prompts}
        return {r["uri"] for r in self.resources}


@dataclass(frozen=True, slots=True)
class Collision:
    """Two pools offer the same name; ``owner`` (the one that offered it first) keeps it."""

    kind: str
    name: str
    owner: str
    other: str

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.name!r} is offered by pools {self.owner!r} and {self.other!r};"
            f" {self.owner!r} keeps it"
        )


@dataclass
class CapabilityIndex:
    """name -> pool for tools and prompts, uri (or template) -> pool for resources.

    When two pools offer the same name, the pool that offered it first keeps it and the
    clash is kept in ``collisions`` (the registry logs it once, ``raybus status`` shows
    it): routing must never flip between pools on heartbeat order, nor move a name to a
    pool whose server started offering it later.

    Pools of different regions (``router.regions``) offering the same name are regional
    replicas, not a collision: each region's first pool is a candidate for the name
    (:meth:`candidates`), and region-aware routing picks among them. Within one region
    (or among pools without one) the first pool keeps the name, as above.
    """

    by_kind: dict[str, dict[str, str]] = field(
        default_factory=lambda: {Kind.TOOL: {}, Kind.PROMPT: {}, Kind.RESOURCE: {}}
    )
    templates: list[tuple[UriTemplate, str]] = field(default_factory=list)
    collisions: list[Collision] = field(default_factory=list)
    # Names offered in more than one region: kind -> name -> pools, the owner first.
    replicas: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        catalogs: list[tuple[str, Catalog]],
        previous: CapabilityIndex | None = None,
        regions: Mapping[str, str | None] | None = None,
    ) -> CapabilityIndex:
        """Index ``catalogs`` (in registration order).

        Args:
            previous: the index this one replaces: a name keeps its owner there while that
                pool still offers it; a new name goes to the first pool (in order).
            regions: each pool's region (``router.regions``); None: regions do not route.
        """
        index = cls()
        region_of = (regions or {}).get
        for kind in (Kind.TOOL, Kind.PROMPT, Kind.RESOURCE):
            offered: dict[str, list[str]] = {}
            for pool, catalog in catalogs:
                for name in sorted(catalog.names(kind)):
                    offered.setdefault(name, []).append(pool)
            earlier = previous.by_kind[kind] if previous is not None else {}
            for name, pools in offered.items():
                owner = earlier.get(name, pools[0])
                owner = owner if owner in pools else pools[0]
                index.by_kind[kind][name] = owner
                # Each region's first pool (the owner first of all) serves the name there.
                keepers: dict[str | None, str] = {region_of(owner): owner}
                for pool in pools:
                    keeper = keepers.setdefault(region_of(pool), pool)
                    if keeper != pool:
                        index.collisions.append(Collision(kind, name, keeper, pool))
                if len(keepers) > 1:
                    index.replicas.setdefault(kind, {})[name] = tuple(keepers.values())
        for pool, catalog in catalogs:
            for template in catalog.resource_templates:
                index.templates.append((UriTemplate(template["uriTemplate"]), pool))
        return index

    def shown(self, pool: str, catalog: Catalog) -> Catalog:
        """``pool``'s catalog without the names another pool keeps (lists show the owner's).

        A regional replica is listed once too, at the name's owner: a client lists a tool
        once and the bus picks the region's pool when it is called.
        """
        lost = {(c.kind, c.name) for c in self.collisions if c.other == pool}
        lost |= {
            (kind, name)
            for kind, names in self.replicas.items()
            for name, pools in names.items()
            if pools[0] != pool
        }
        if not lost:
            return catalog
        return Catalog.of(
            tools=[t for t in catalog.tools if (Kind.TOOL, t["name"]) not in lost],
            resources=[r for r in catalog.resources if (Kind.RESOURCE, r["uri"]) not in lost],
            resource_templates=list(catalog.resource_templates),
            prompts=[p for p in catalog.prompts if (Kind.PROMPT, p["name"]) not in lost],
        )

    def pool_for(self, kind: str, name: str) -> str | None:
        pool = self.by_kind[kind].get(name)
        if pool is None and kind == Kind.RESOURCE:
            pool = next((p for template, p in self.templates if template.matches(name)), None)
        return pool

    def candidates(self, kind: str, name: str) -> tuple[str, ...]:
        """Every pool that may serve ``name``: one per region, the owner first."""
        replicas = self.replicas.get(kind, {}).get(name)
        if replicas is not None:
            return replicas
        pool = self.pool_for(kind, name)
        return () if pool is None else (pool,)

    def pools(self) -> set[str]:
        names = {p for table in self.by_kind.values() for p in table.values()}
        return names | {p for _, p in self.templates}
