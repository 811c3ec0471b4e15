"""What an MCP server offers (tools, resources, templates, prompts) and where it lives.

A :class:`Catalog` holds the MCP wire objects as the server listed them. Workers send
its digest with every heartbeat and the catalog itself only when the digest changes.
:class:`CapabilityIndex` maps a tool, prompt or resource to the pool serving it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CapabilityIndex", "Catalog", "Kind", "UriTemplate"]

logger = logging.getLogger(__name__)

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


_ANY, _SEGMENT = 0, 1  # variables: one or more of any character / of any but "/"


class UriTemplate:
    """Matches URIs against an RFC 6570 level-1 template, in time linear in the URI.

    This is all MCP servers use for routing: ``{var}`` matches one path segment,
    ``{+var}`` / ``{#var}`` / ``{/var}`` anything (but a newline). The URI is untrusted
    (a ``resources/read`` from any client) and a regex for a template with two variables
    backtracks in time quadratic in it, so the template runs as an NFA instead: one pass
    over the URI keeping the set of template positions reachable so far.
    """

    def __init__(self, template: str) -> None:
        atoms: list[str | int] = []  # one literal character, or a variable
        i = 0
        while i < len(template):
            end = template.find("}", i) if template[i] == "{" else -1
            if end == -1:
                atoms.append(template[i])
                i += 1
            else:
                atoms.append(_ANY if template[i + 1 : i + 2] in ("+", "#", "/") else _SEGMENT)
                i = end + 1
        head = next((n for n, atom in enumerate(atoms) if not isinstance(atom, str)), len(atoms))
        tail = next(
            (n for n, atom in enumerate(reversed(atoms)) if not isinstance(atom, str)),
            len(atoms),
        )
        self.template = template
        self._prefix = "".join(str(a) for a in atoms[:head])
        self._suffix = (
            "".join(str(a) for a in atoms[len(atoms) - tail :]) if tail < len(atoms) else ""
        )
        self._middle = atoms[head : len(atoms) - tail] if head < len(atoms) else []

    def matches(self, uri: str) -> bool:
        if not self._middle:
            return uri == self._prefix
        if not (
            len(uri) >= len(self._prefix) + len(self._suffix)
            and uri.startswith(self._prefix)
            and uri.endswith(self._suffix)
        ):
            return False
        atoms, done = self._middle, len(self._middle)
        states = {0}
        for char in uri[len(self._prefix) : len(uri) - len(self._suffix)]:
            reached = set()
            for at in states:
                if at == done:
                    continue
                atom = atoms[at]
                if isinstance(atom, str):
                    if char == atom:
                        reached.add(at + 1)
                elif char != ("\n" if atom == _ANY else "/"):
                    reached.add(at)  # the variable takes more characters
                    reached.add(at + 1)
            if not reached:
                return False
            states = reached
        return done in states


@dataclass
class CapabilityIndex:
    """name -> pool for tools and prompts, uri (or template) -> pool for resources.

    When two pools offer the same name, the pool that registered it first keeps it (and a
    warning names both): routing must never flip between pools on heartbeat order.
    """

    by_kind: dict[str, dict[str, str]] = field(
        default_factory=lambda: {Kind.TOOL: {}, Kind.PROMPT: {}, Kind.RESOURCE: {}}
    )
    templates: list[tuple[UriTemplate, str]] = field(default_factory=list)

    @classmethod
    def build(cls, catalogs: list[tuple[str, Catalog]]) -> CapabilityIndex:
        index = cls()
        for pool, catalog in catalogs:
            for kind in (Kind.TOOL, Kind.PROMPT, Kind.RESOURCE):
                table = index.by_kind[kind]
                for name in sorted(catalog.names(kind)):
                    owner = table.setdefault(name, pool)
                    if owner != pool:
                        logger.warning(
                            "%s %r is offered by pools %s and %s; using %s",
                            kind,
                            name,
                            owner,
                            pool,
                            owner,
                        )
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
