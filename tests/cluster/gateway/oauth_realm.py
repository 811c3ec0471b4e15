"""The Keycloak realms the OAuth tests import: clients, scopes and audiences.

Realm ``mcp`` mints client-credentials tokens for the gateway:

* client ``agent`` gets scope ``mcp`` (whose mapper puts the gateway's URL in ``aud``)
  and may ask for ``tools.echo`` too;
* client ``reader`` gets ``mcp`` only;
* client ``foreign`` gets tokens for another resource (another audience, no ``mcp``);
* client ``gateway`` is the gateway's own, for token introspection.

Realm ``other`` is a second issuer on the same server, with its own keys.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CLIENT_SECRETS", "MCP_REALM", "OTHER_REALM", "realms"]

MCP_REALM = "mcp"
OTHER_REALM = "other"
CLIENT_SECRETS = {
    "agent": "agent-secret",
    "reader": "reader-secret",
    "foreign": "foreign-secret",
    "gateway": "gateway-secret",
}


def _audience_scope(name: str, audience: str) -> dict[str, Any]:
    return {
        "name": name,
        "protocol": "openid-connect",
        "attributes": {"include.in.token.scope": "true"},
        "protocolMappers": [
            {
                "name": f"{name}-audience",
                "protocol": "openid-connect",
                "protocolMapper": "oidc-audience-mapper",
                "config": {
                    "included.custom.audience": audience,
                    "access.token.claim": "true",
                    "id.token.claim": "false",
                    "introspection.token.claim": "true",
                },
            }
        ],
    }


def _client(
    client_id: str, default: list[str], optional: list[str] | None = None
) -> dict[str, Any]:
    return {
        "clientId": client_id,
        "enabled": True,
        "publicClient": False,
        "secret": CLIENT_SECRETS[client_id],
        "serviceAccountsEnabled": True,
        "standardFlowEnabled": False,
        "directAccessGrantsEnabled": False,
        "fullScopeAllowed": False,
        "defaultClientScopes": list(default),
        "optionalClientScopes": optional or [],
    }


def realms(audience: str) -> list[dict[str, Any]]:
    """Both realms; tokens of realm ``mcp`` are for ``audience`` (the gateway's URL)."""
    plain = {"protocol": "openid-connect", "attributes": {"include.in.token.scope": "true"}}
    mcp = {
        "realm": MCP_REALM,
        "enabled": True,
        "accessTokenLifespan": 900,
        "clientScopes": [
            _audience_scope("mcp", audience),
            {"name": "tools.echo", **plain},
            _audience_scope("elsewhere", "http://127.0.0.1:9/another-resource"),
        ],
        "clients": [
            _client("agent", ["mcp"], ["tools.echo"]),
            _client("reader", ["mcp"]),
            _client("foreign", ["elsewhere"]),
            _client("gateway", []),
        ],
    }
    other = {
        "realm": OTHER_REALM,
        "enabled": True,
        "clientScopes": [_audience_scope("mcp", audience)],
        "clients": [_client("agent", ["mcp"])],
    }
    return [mcp, other]
