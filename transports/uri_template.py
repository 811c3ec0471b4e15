"""RFC 6570 level-1 URI templates, matched in time linear in the URI.

MCP servers route resources with them (``kit://items/{id}``) and the gateway's
allow-lists name resources with them; in both places the URI is untrusted.
"""

from __future__ import annotations

__all__ = ["UriTemplate"]

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
