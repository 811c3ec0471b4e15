"""A pool whose server runs elsewhere: its ``url`` and ``headers``, checked at the edge.

``headers`` are what the workers send upstream on every request, instead of anything a
caller sent (a caller's own credentials never leave the gateway). A value may name
environment variables, ``"Bearer ${UPSTREAM_TOKEN}"``: they are read once, where the
configuration is built (``raybus up``, ``raybus config check``, a driver or notebook),
so the workers - possibly on other machines, with other environments - get the values
themselves, as :class:`~pydantic.SecretStr`, which never shows in a log line, a
``repr`` or ``raybus status``. ``$$`` stands for a literal ``$``.

An unset variable is one line naming the pool, the header and the variable; a value is
never part of an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

__all__ = ["resolve_headers", "shown_url", "url_problem"]

# One pass, no backtracking: "$$", a whole "${NAME}", or a "$" that starts neither.
_REFERENCE = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)\}|\{|)")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
# Headers the MCP transport sets itself: a configured value would break the session.
_TRANSPORT_HEADERS = frozenset(
    {
        "accept",
        "content-type",
        "content-length",
        "host",
        "connection",
        "transfer-encoding",
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
    }
)


def shown_url(url: str) -> str:
    """``url`` as logs and errors show it: scheme, host, port and path, never a query
    (where some services take keys)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a Streamable HTTP endpoint, or None."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"url is not a URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return "url must start with http:// or https://"
    if not parts.hostname:
        return "url must name a host, e.g. https://tools.example.com/mcp"
    if parts.username or parts.password:
        return "url must not carry credentials: give them in headers"
    if parts.fragment:
        return "url must not have a #fragment"
    return None


def resolve_headers(
    pool: str, headers: Mapping[str, Any], environ: Mapping[str, str]
) -> dict[str, SecretStr]:
    """Check the header names and replace ``${NAME}`` references from ``environ``.

    Values that are already :class:`SecretStr` were resolved before (a configuration
    validated again) and are kept as they are.

    Raises:
        ValueError: a bad header name, a value that is not a string, a malformed
            reference, or an unset variable; one line naming the pool and header.
    """
    resolved: dict[str, SecretStr] = {}
    for name, value in headers.items():
        where = f"pool {pool!r}, header {name!r}"
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ValueError(f"pool {pool!r}: {name!r} is not an HTTP header name")
        if name.lower() in _TRANSPORT_HEADERS:
            raise ValueError(f"{where}: set by the MCP transport itself, not configurable")
        if isinstance(value, SecretStr):
            resolved[name] = value
            continue
        if not isinstance(value, str):
            raise ValueError(f"{where}: the value must be a string")
        text = _substitute(where, value, environ)
        if any(c in text for c in "\r\n\0"):
            raise ValueError(f"{where}: the value must not contain line breaks or NUL")
        resolved[name] = SecretStr(text)
    return resolved


def _substitute(where: str, value: str, environ: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        token, variable = match.group(1), match.group(2)
        if token == "$":
            return "$"
        if variable is None:
            raise ValueError(f"{where}: a '$' must start ${{NAME}} or be written '$$'")
        found = environ.get(variable)
        if found is None:
            raise ValueError(f"{where}: environment variable {variable} is not set")
        return found

    return _REFERENCE.sub(replace, value)
