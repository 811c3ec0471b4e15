"""Per-principal allow-lists over every MCP method family, deny by default.

An entry names what a principal may use:

* ``echo`` or ``tool:echo``: the tool ``echo`` (a bare name is a tool, as before);
* ``prompt:summarize``: the prompt ``summarize``;
* ``resource:kit://greeting``: that resource; ``resource:kit://items/{id}``: every URI
  the template matches (and the template itself, in ``resources/templates/list`` and in
  completions of its arguments);
* ``tool:*``, ``prompt:*``, ``resource:*``: every one of that kind; ``*``: everything.

Once allow-lists are configured, a request is allowed only if its method is protocol
plumbing (:data:`ALWAYS_ALLOWED`: handshake, ping, logging level, list-change streams),
a task operation (:data:`TASK_METHODS`: the store answers only the task's creator), a
list (whose result is filtered to what the principal may use), or names a tool, prompt
or resource the principal's entries cover. Every other method - including methods this
module does not know - is denied, so a new method family is closed until it is named
here. A principal without an entry may use nothing but the plumbing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from transports.uri_template import UriTemplate

__all__ = ["ALWAYS_ALLOWED", "LISTS", "TASK_METHODS", "AllowList", "Kind", "Subject", "subject_of"]


class Kind(enum.Enum):
    TOOL = "tool"
    PROMPT = "prompt"
    RESOURCE = "resource"
    RESOURCE_TEMPLATE = "resource-template"


ALWAYS_ALLOWED = frozenset({"initialize", "ping", "server/discover", "logging/setLevel"})
# MCP tasks: the store binds each task to the principal that created it (and a task can
# only be created by a tools/call the allow-list permitted), so ownership is the check.
TASK_METHODS = frozenset({"tasks/get", "tasks/result", "tasks/cancel", "tasks/list"})
# List method -> (the result's field, the item's key, the kind of its items).
LISTS: dict[str, tuple[str, str, Kind]] = {
    "tools/list": ("tools", "name", Kind.TOOL),
    "prompts/list": ("prompts", "name", Kind.PROMPT),
    "resources/list": ("resources", "uri", Kind.RESOURCE),
    "resources/templates/list": ("resourceTemplates", "uriTemplate", Kind.RESOURCE_TEMPLATE),
}
_BY_NAME = {"tools/call": Kind.TOOL, "prompts/get": Kind.PROMPT}
_BY_URI = frozenset({"resources/read", "resources/subscribe", "resources/unsubscribe"})


@dataclass(frozen=True)
class Subject:
    """What a request uses: a tool, prompt or resource by name (``None``: unnamed)."""

    kind: Kind
    name: str | None


def subject_of(method: str, params: Mapping[str, Any] | None) -> Subject | None:
    """The tool, prompt or resource ``method`` uses; ``None`` when it names none."""
    params = params or {}
    if method in _BY_NAME:
        name = params.get("name")
        return Subject(_BY_NAME[method], name if isinstance(name, str) else None)
    if method in _BY_URI:
        uri = params.get("uri")
        return Subject(Kind.RESOURCE, uri if isinstance(uri, str) else None)
    if method == "completion/complete":
        ref = params.get("ref")
        ref = ref if isinstance(ref, Mapping) else {}
        if ref.get("type") == "ref/prompt":
            name = ref.get("name")
            return Subject(Kind.PROMPT, name if isinstance(name, str) else None)
        uri = ref.get("uri")
        # A completion of a template's argument is allowed with the template.
        return Subject(Kind.RESOURCE_TEMPLATE, uri if isinstance(uri, str) else None)
    return None


class _Entries:
    """One principal's entries, parsed once."""

    def __init__(self, entries: list[str]) -> None:
        self.everything = "*" in entries
        self.all_of: set[Kind] = set()
        self.names: dict[Kind, set[str]] = {
            Kind.TOOL: set(),
            Kind.PROMPT: set(),
            Kind.RESOURCE: set(),
        }
        self.templates: list[UriTemplate] = []
        for entry in entries:
            prefix, colon, rest = entry.partition(":")
            kind = {"tool": Kind.TOOL, "prompt": Kind.PROMPT, "resource": Kind.RESOURCE}.get(prefix)
            if not colon or kind is None:  # a bare name is a tool (and "a:b" tool names stay)
                kind, rest = Kind.TOOL, entry
            if rest == "*":
                self.all_of.add(kind)
                if kind is Kind.RESOURCE:
                    self.all_of.add(Kind.RESOURCE_TEMPLATE)
            else:
                self.names[kind].add(rest)
                if kind is Kind.RESOURCE and "{" in rest:
                    self.templates.append(UriTemplate(rest))

    def permits(self, kind: Kind, name: str) -> bool:
        # A template is named by its own text, like a resource by its URI.
        names = self.names[Kind.RESOURCE if kind is Kind.RESOURCE_TEMPLATE else kind]
        if self.everything or kind in self.all_of or name in names:
            return True
        return kind is Kind.RESOURCE and any(t.matches(name) for t in self.templates)


class AllowList:
    """``principal -> entries`` (see the module docstring); ``None`` allows everything."""

    def __init__(self, allow: Mapping[str, list[str]] | None) -> None:
        self._by_principal = (
            None if allow is None else {p: _Entries(list(e)) for p, e in allow.items()}
        )
        self._nothing = _Entries([])

    @property
    def enabled(self) -> bool:
        return self._by_principal is not None

    def _entries(self, principal: str) -> _Entries | None:
        if self._by_principal is None:
            return None
        return self._by_principal.get(principal, self._nothing)

    def permits(self, principal: str, method: str, params: Mapping[str, Any] | None) -> bool:
        """Whether ``principal`` may send this request at all (lists are filtered later)."""
        entries = self._entries(principal)
        if entries is None or method in ALWAYS_ALLOWED or method in LISTS or method in TASK_METHODS:
            return True
        if method == "subscriptions/listen":
            # List changes say nothing a list would not show; a resource's updates are
            # the resource's: each URI listened to must be one the principal may read.
            listened = _listened_uris(params)
            return listened is not None and all(
                entries.permits(Kind.RESOURCE, uri) for uri in listened
            )
        subject = subject_of(method, params)
        if subject is None or subject.name is None:
            return False  # an unknown method family, or a request that names nothing
        return entries.permits(subject.kind, subject.name)

    def permits_item(self, principal: str, kind: Kind, name: str) -> bool:
        entries = self._entries(principal)
        return entries is None or entries.permits(kind, name)


def _listened_uris(params: Mapping[str, Any] | None) -> list[str] | None:
    """The resource URIs a ``subscriptions/listen`` asks updates of (None: malformed)."""
    notifications = (params or {}).get("notifications")
    if not isinstance(notifications, Mapping):
        return []  # nothing asked (the SDK refuses the malformed request itself)
    uris = notifications.get("resourceSubscriptions", notifications.get("resource_subscriptions"))
    if uris is None:
        return []
    if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
        return None
    return uris
