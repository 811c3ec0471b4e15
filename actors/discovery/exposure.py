"""How a pool shows its server to the bus: a name prefix and which tools it shows.

A pool with ``namespace: geo`` (and the bus's separator, ``_`` by default) lists its
server's tool ``hypotenuse`` as ``geo_hypotenuse``, its prompt ``summarize`` as
``geo_summarize``, and the ``name`` of each resource and resource template as
``geo_<name>``. A call by the public name is mapped back to the server's own name before
it reaches the server; the server never sees a public name.

Resource URIs (and URI templates) are never rewritten. A URI is an address the server
itself hands out (resource links and embedded resources in tool results, resource update
notifications), so a rewritten one would stop matching what the server says; resources
are read, subscribed and completed by the URI the server listed. When two pools list the
same URI (the same server under two namespaces), the first pool serves it.

``include`` / ``exclude`` filter tools by the server's own names (exact names or
:mod:`fnmatch` glob patterns, case-sensitive), before the prefix is added: a tool is shown
when it matches some ``include`` pattern (or ``include`` is empty) and no ``exclude``
pattern. A hidden tool is neither listed nor callable; a call to it is refused as an
unknown tool, the same error a name no pool offers gets.

Pure logic, applied where the worker talks to its server, so every backend routes and
lists the public names alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from actors.discovery.catalog import Catalog
from transports.message import Request

__all__ = ["SHOW_ALL", "PoolExposure", "Refusal"]

JSONObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the server must not see: the message of its -32602 error."""

    message: str


@dataclass(frozen=True, slots=True)
class PoolExposure:
    """A pool's namespace and tool filters; the default shows the server unchanged."""

    namespace: str | None = None
    separator: str = "_"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @property
    def is_identity(self) -> bool:
        return self.namespace is None and not self.include and not self.exclude

    @property
    def prefix(self) -> str:
        return f"{self.namespace}{self.separator}" if self.namespace is not None else ""

    def shows_tool(self, own_name: str) -> bool:
        """Does the pool show the server's tool ``own_name`` (the filters only)?"""
        if self.include and not any(fnmatchcase(own_name, p) for p in self.include):
            return False
        return not any(fnmatchcase(own_name, p) for p in self.exclude)

    def public_name(self, own_name: str) -> str:
        return self.prefix + own_name

    def own_name(self, public_name: str) -> str | None:
        """The server's name behind ``public_name``; None when the name is not this pool's."""
        prefix = self.prefix
        if not public_name.startswith(prefix) or len(public_name) == len(prefix):
            return None
        return public_name[len(prefix) :]

    def expose(self, catalog: Catalog) -> Catalog:
        """The catalog as the bus lists it: shown tools only, names prefixed, URIs kept."""
        if self.is_identity:
            return catalog
        tools = [self._renamed(t) for t in catalog.tools if self.shows_tool(str(t.get("name")))]
        return Catalog.of(
            tools=tools,
            resources=[self._renamed(r) for r in catalog.resources],
            resource_templates=[self._renamed(t) for t in catalog.resource_templates],
            prompts=[self._renamed(p) for p in catalog.prompts],
        )

    def to_server(self, request: Request) -> Request | Refusal:
        """``request`` with the server's own names, or why the server must not see it.

        ``tools/call`` and ``prompts/get`` name a tool or prompt; ``completion/complete``
        may name a prompt (``ref/prompt``). Everything else passes unchanged.
        """
        if self.is_identity or not isinstance(request.params, dict):
            return request
        params = request.params
        if request.method == "tools/call":
            own = self._own(params.get("name"))
            if own is None or not self.shows_tool(own):
                return Refusal(f"Unknown tool: {params.get('name')}")
            return _with_params(request, {**params, "name": own})
        if request.method == "prompts/get":
            own = self._own(params.get("name"))
            if own is None:
                return Refusal(f"Unknown prompt: {params.get('name')}")
            return _with_params(request, {**params, "name": own})
        ref = params.get("ref")
        if (
            request.method == "completion/complete"
            and isinstance(ref, dict)
            and ref.get("type") == "ref/prompt"
        ):
            own = self._own(ref.get("name"))
            if own is None:
                return Refusal(f"Unknown prompt: {ref.get('name')}")
            return _with_params(request, {**params, "ref": {**ref, "name": own}})
        return request

    def _own(self, name: Any) -> str | None:
        return self.own_name(name) if isinstance(name, str) else None

    def _renamed(self, item: JSONObject) -> JSONObject:
        name = item.get("name")
        if self.namespace is None or not isinstance(name, str):
            return item
        return {**item, "name": self.public_name(name)}


def _with_params(request: Request, params: JSONObject) -> Request:
    return request.model_copy(update={"params": params})


SHOW_ALL = PoolExposure()  # no namespace, no filters: the server as it lists itself
