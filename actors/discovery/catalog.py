"""What an MCP server offers (tools, resources, templates, prompts) and where it lives.

A :class:`Catalog` holds the MCP wire objects as the server listed them. Workers send
its digest with every heartbeat and the catalog itself only when the digest changes.
:class:`CapabilityIndex` maps a tool, prompt or resource to the pool serving it.
"""

from __future__ import annotations

import hashlib
import json
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
    """Two pools offer the same name; ``owner`` (registered first) keeps it."""

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

    When two pools offer the same name, the pool that registered it first keeps it and the
    clash is kept in ``collisions`` (the registry logs it once, ``raybus status`` shows
    it): routing must never flip between pools on heartbeat order.
    """

    by_kind: dict[str, dict[str, str]] = field(
        default_factory=lambda: {Kind.TOOL: {}, Kind.PROMPT: {}, Kind.RESOURCE: {}}
    )
    templates: list[tuple[UriTemplate, str]] = field(default_factory=list)
    collisions: list[Collision] = field(default_factory=list)

    @classmethod
    def build(cls, catalogs: list[tuple[str, Catalog]]) -> CapabilityIndex:
        index = cls()
        for pool, catalog in catalogs:
            for kind in (Kind.TOOL, Kind.PROMPT, Kind.RESOURCE):
                table = index.by_kind[kind]
                for name in sorted(catalog.names(kind)):
                    owner = table.setdefault(name, pool)
                    if owner != pool:
                        index.collisions.append(Collision(kind, name, owner, pool))
            for template in catalog.resource_templates:
                index.templates.append((UriTemplate(template["uriTemplate"]), pool))
        return index

    def pool_for(self, kind: str, name: str) -> str | None:
        pool = self.by_kind[kind].get(name)
        if pool is None and kind == Kind.RESOURCE:
            pool = next((p for template, p in self.templates if template.matches(name)), None)
        return pool

    def pools(self) -> set[str]:
        names = {p for table in self.by_kind.values() for p in table.values()}
        return names | {p for _, p in self.templates}
