"""The gateway's door as an OAuth 2.1 resource server (MCP authorization, RFC 9728).

* :class:`ResourceMetadataRoute` serves the protected resource metadata (RFC 9728) at
  ``/.well-known/oauth-protected-resource`` and at the path-suffixed form for the MCP
  endpoint's path (``/.well-known/oauth-protected-resource/mcp``), without a token.
* :class:`OAuthBearerAuth` lets a request through only with a valid access token of the
  configured issuer for this resource (or a configured static token). Without one:
  401 and ``WWW-Authenticate: Bearer resource_metadata="..."`` (with
  ``error="invalid_token"`` when a token was given); a valid token without the required
  scopes: 403 ``insufficient_scope``. The token stops here: the Authorization header is
  removed from the request before anything behind the door sees it, and only the
  principal travels on (in the ASGI scope's state).
* :class:`ToolScopeGate`, behind the body check: 403 ``insufficient_scope`` for a
  ``tools/call`` of a tool whose scopes (``tool_scopes``) the token lacks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from cluster.gateway.policy.http_guards import (
    CLIENT_ID,
    CLIENT_TOOL,
    OAUTH_PRINCIPAL,
    PRINCIPAL,
    REFUSED,
)
from cluster.gateway.policy.oauth import (
    AuthorizationServerUnavailable,
    TokenPrincipal,
    TokenRefused,
    TokenVerifier,
    missing_scopes,
)
from cluster.gateway.policy.settings import OAuthConfig
from cluster.gateway.policy.tokens import TokenTable
from transports.errors import BusErrorCode

__all__ = [
    "OAuthBearerAuth",
    "ResourceMetadataRoute",
    "ToolScopeGate",
    "resource_metadata",
    "resource_metadata_url",
]

logger = logging.getLogger(__name__)

_WELL_KNOWN = "/.well-known/oauth-protected-resource"
_RETRY_AFTER_S = 5


def resource_metadata_url(config: OAuthConfig) -> str:
    """Where the audience's metadata is: the well-known prefix inserted before its path."""
    parts = urlsplit(config.audience)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, _WELL_KNOWN + path, "", ""))


def resource_metadata(config: OAuthConfig) -> dict[str, Any]:
    """The RFC 9728 document of this resource."""
    return {
        "resource": config.audience,
        "authorization_servers": [config.issuer],
        "scopes_supported": config.scopes_supported,
        "bearer_methods_supported": ["header"],
        "resource_name": "raybus gateway",
    }


def _state(scope: Scope) -> MutableMapping[str, Any]:
    state: MutableMapping[str, Any] = scope.setdefault("state", {})
    return state


def _quoted(value: str) -> str:
    # Values we put in a challenge are ours or scope tokens; quotes and backslashes are
    # escaped all the same (RFC 9110 quoted-string).
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(metadata_url: str, error: str | None = None, scopes: list[str] | None = None) -> str:
    """A ``WWW-Authenticate: Bearer`` value pointing at the resource metadata."""
    parts = [f"resource_metadata={_quoted(metadata_url)}"]
    if error is not None:
        parts.append(f"error={_quoted(error)}")
    if scopes:
        parts.append(f"scope={_quoted(' '.join(scopes))}")
    return "Bearer " + ", ".join(parts)


async def _respond(
    send: Send, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]]
) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class ResourceMetadataRoute:
    """ASGI middleware: answers GET (and HEAD) for the resource metadata, else passes on."""

    def __init__(self, app: ASGIApp, config: OAuthConfig) -> None:
        self._app = app
        path = urlsplit(config.audience).path.rstrip("/")
        self._paths = {_WELL_KNOWN, _WELL_KNOWN + path}
        self._body = json.dumps(resource_metadata(config), separators=(",", ":")).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").rstrip("/") not in self._paths:
            await self._app(scope, receive, send)
            return
        if scope.get("method") not in ("GET", "HEAD"):
            _state(scope)[REFUSED] = "method_not_allowed"
            body = b"405 Method Not Allowed: the resource metadata is read with GET\n"
            await send(
                {
                    "type": "http.response.start",
                    "status": 405,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                        (b"allow", b"GET, HEAD"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self._body)).encode()),
            (b"cache-control", b"public, max-age=300"),
            # A browser-based client on an allowed origin reads it cross-origin.
            (b"access-control-allow-origin", b"*"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = b"" if scope.get("method") == "HEAD" else self._body
        await send({"type": "http.response.body", "body": body})


class OAuthBearerAuth:
    """ASGI middleware: a valid access token (or a static one) or no way in.

    Args:
        app: what serves authenticated requests.
        verifier: checks tokens against the issuer.
        tokens: static hashed tokens, accepted too (their principals have no scopes and
            are not scope-checked: they predate OAuth and are trusted whole).
    """

    def __init__(self, app: ASGIApp, verifier: TokenVerifier, tokens: TokenTable) -> None:
        self._app = app
        self._verifier = verifier
        self._tokens = tokens
        self._config = verifier.config
        self._metadata_url = resource_metadata_url(verifier.config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        raw = scope.get("headers") or []
        values = [v for k, v in raw if k == b"authorization"]
        if not values:
            await self._refuse(scope, send, 401, None, "authentication required")
            return
        if len(values) > 1 or len(values[0]) > self._config.max_token_bytes + len("Bearer "):
            await self._refuse(scope, send, 401, "invalid_token", "malformed or oversized token")
            return
        scheme, _, token = values[0].decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            await self._refuse(scope, send, 401, "invalid_token", "a Bearer token is required")
            return
        # The credential goes no further than this door: nothing behind it sees it.
        scope["headers"] = [(k, v) for k, v in raw if k != b"authorization"]
        state = _state(scope)
        static = self._tokens.principal_for(token) if self._tokens else None
        if static is not None:
            state[PRINCIPAL] = static
            await self._app(scope, receive, send)
            return
        try:
            principal = await self._verifier.verify(token)
        except TokenRefused as exc:
            await self._refuse(scope, send, 401, "invalid_token", str(exc))
            return
        except AuthorizationServerUnavailable as exc:
            logger.warning("refusing a token: the authorization server is unavailable: %s", exc)
            await self._unavailable(scope, send, str(exc))
            return
        state[PRINCIPAL] = principal.name
        state[OAUTH_PRINCIPAL] = principal
        missing = missing_scopes(principal.scopes, self._config.required_scopes)
        if missing:
            await self._refuse(
                scope,
                send,
                403,
                "insufficient_scope",
                f"the token lacks scope {' '.join(missing)}",
                self._config.required_scopes,
            )
            return
        await self._app(scope, receive, send)

    async def _refuse(
        self,
        scope: Scope,
        send: Send,
        status: int,
        error: str | None,
        description: str,
        scopes: list[str] | None = None,
    ) -> None:
        _state(scope)[REFUSED] = error or "authentication_required"
        if scope["type"] == "websocket":  # before accept, a close is answered as HTTP 403
            await send({"type": "websocket.close", "code": 1008})
            return
        needed = scopes if scopes is not None else self._config.required_scopes
        header = challenge(self._metadata_url, error, needed or None)
        body = {"error": error or "invalid_request", "error_description": description}
        await _respond(send, status, body, [(b"www-authenticate", header.encode())])

    async def _unavailable(self, scope: Scope, send: Send, detail: str) -> None:
        _state(scope)[REFUSED] = "authorization_server_unavailable"
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013})  # try again later
            return
        body = {
            "error": "temporarily_unavailable",
            "error_description": f"cannot check the token: {detail}",
        }
        await _respond(send, 503, body, [(b"retry-after", str(_RETRY_AFTER_S).encode())])


class ToolScopeGate:
    """ASGI middleware, behind the body check: a tool's own scopes, before it is called."""

    def __init__(self, app: ASGIApp, config: OAuthConfig) -> None:
        self._app = app
        self._config = config
        self._metadata_url = resource_metadata_url(config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state")
        principal = state.get(OAUTH_PRINCIPAL) if isinstance(state, MutableMapping) else None
        tool = state.get(CLIENT_TOOL) if isinstance(state, MutableMapping) else None
        if not isinstance(principal, TokenPrincipal) or not isinstance(tool, str):
            await self._app(scope, receive, send)
            return
        needed = self._config.tool_scopes.get(tool, [])
        missing = missing_scopes(principal.scopes, needed)
        if not missing:
            await self._app(scope, receive, send)
            return
        assert isinstance(state, MutableMapping)
        state[REFUSED] = "insufficient_scope"
        scopes = list(dict.fromkeys([*self._config.required_scopes, *needed]))
        message = f"tool {tool!r} needs scope {' '.join(missing)}"
        body = {
            "jsonrpc": "2.0",
            "id": state.get(CLIENT_ID),
            "error": {"code": int(BusErrorCode.FORBIDDEN), "message": message},
        }
        header = challenge(self._metadata_url, "insufficient_scope", scopes)
        await _respond(send, 403, body, [(b"www-authenticate", header.encode())])
