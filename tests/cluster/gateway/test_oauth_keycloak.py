"""The gateway as an OAuth 2.1 resource server against a real authorization server:
Keycloak, fetched from Maven Central and started once per test session on 127.0.0.1
(``keycloak_gateway`` in tests/services_plugin.py; realms in oauth_realm.py).

The official MCP client's OAuth support runs the whole flow: a 401 points it at the
gateway's protected resource metadata (RFC 9728), which names Keycloak; it discovers
Keycloak's metadata (RFC 8414), gets a client-credentials token, calls through the
gateway, and steps up its scopes when a tool needs more (403 insufficient_scope).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2 as httpx
import mcp
import pytest
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from cluster.gateway.policy.chain import PolicyConfig
from cluster.gateway.server import Gateway
from tests.cluster.gateway.fake_bus import FakeBus, fake_bus
from tests.cluster.gateway.oauth_realm import CLIENT_SECRETS, MCP_REALM, OTHER_REALM
from tests.cluster.gateway.serving import serving

pytestmark = [pytest.mark.keycloak, pytest.mark.slow]

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


class MemoryStorage:
    """The SDK's TokenStorage, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def policy_for(keycloak: tuple[str, int], realm: str = MCP_REALM, **oauth: Any) -> dict[str, Any]:
    url, port = keycloak
    return {
        "oauth": {
            "issuer": f"{url}/realms/{realm}",
            "audience": f"http://127.0.0.1:{port}/mcp",
            "required_scopes": ["mcp"],
            "tool_scopes": {"echo": ["tools.echo"]},
            "principal_claim": "azp",  # service accounts: the client names the principal
            **oauth,
        }
    }


@asynccontextmanager
async def gateway_for(
    keycloak: tuple[str, int], bus: FakeBus, policy: dict[str, Any]
) -> AsyncIterator[str]:
    gateway = Gateway(bus, policy=PolicyConfig.model_validate(policy))
    try:
        async with serving(gateway, policy, port=keycloak[1]) as url:
            yield url
    finally:
        await gateway.aclose()


async def token_of(keycloak: tuple[str, int], client: str, scope: str | None = None) -> str:
    data = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    async with httpx.AsyncClient(timeout=60) as http:
        answer = await http.post(
            f"{keycloak[0]}/realms/{MCP_REALM}/protocol/openid-connect/token",
            data=data,
            auth=(client, CLIENT_SECRETS[client]),
        )
    answer.raise_for_status()
    token: str = answer.json()["access_token"]
    return token


def client_for(url: str, token: str) -> mcp.Client:
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return mcp.Client(streamable_http_client(url, http_client=http), mode="legacy")


async def post(url: str, token: str, body: dict[str, Any] = PING) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(
            url, json=body, headers={**ACCEPT, "Authorization": f"Bearer {token}"}
        )


async def test_the_sdk_client_discovers_the_issuer_gets_a_token_and_steps_up_for_a_tool(
    keycloak_gateway: tuple[str, int],
) -> None:
    bus = fake_bus()
    issuer = f"{keycloak_gateway[0]}/realms/{MCP_REALM}"
    async with gateway_for(keycloak_gateway, bus, policy_for(keycloak_gateway)) as url:
        storage = MemoryStorage()
        provider = ClientCredentialsOAuthProvider(
            server_url=url,
            storage=storage,
            client_id="agent",
            client_secret=CLIENT_SECRETS["agent"],
            issuer=issuer,
        )
        http = httpx.AsyncClient(auth=provider, timeout=60)
        async with mcp.Client(streamable_http_client(url, http_client=http), mode="legacy") as c:
            counted = await c.call_tool("count", {"steps": 2})
            first_scopes = set((storage.tokens.scope or "").split()) if storage.tokens else set()
            echoed = await c.call_tool("echo", {"text": "stepped up"})
        await http.aclose()
    assert counted.content[0].text == "counted 2"  # type: ignore[union-attr]
    assert echoed.content[0].text == "stepped up"  # type: ignore[union-attr]
    # The first token had what the 401 asked for; the 403 made the client ask for more.
    assert "tools.echo" not in first_scopes
    assert storage.tokens is not None
    assert "tools.echo" in (storage.tokens.scope or "").split()
    assert {s.principal for s in bus.sessions} == {"agent"}
    assert [c.name for c in bus.calls] == ["count", "echo"]


async def test_keycloak_tokens_the_gateway_must_refuse(keycloak_gateway: tuple[str, int]) -> None:
    reader = await token_of(keycloak_gateway, "reader")
    foreign = await token_of(keycloak_gateway, "foreign")
    agent = await token_of(keycloak_gateway, "agent")
    head, body, signature = agent.split(".")
    tampered = f"{head}.{body[:-4]}AAAA.{signature}"
    echo = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "x"}},
    }
    bus = fake_bus()
    async with gateway_for(keycloak_gateway, bus, policy_for(keycloak_gateway)) as url:
        async with client_for(url, agent) as client:
            fine = await client.call_tool("count", {"steps": 1})
        for_elsewhere = await post(url, foreign)
        forged = await post(url, tampered)
        lacking = await post(url, reader, echo)
    assert fine.content[0].text == "counted 1"  # type: ignore[union-attr]
    assert for_elsewhere.status_code == 401
    assert for_elsewhere.json()["error_description"] == "token is for another audience"
    assert forged.status_code == 401
    assert lacking.status_code == 403
    assert (
        'error="insufficient_scope", scope="mcp tools.echo"'
        in (lacking.headers["www-authenticate"])
    )
    assert [c.name for c in bus.calls] == ["count"]  # only the good token's call


async def test_a_token_of_another_realm_is_refused(keycloak_gateway: tuple[str, int]) -> None:
    agent = await token_of(keycloak_gateway, "agent")
    policy = policy_for(keycloak_gateway, realm=OTHER_REALM)
    async with gateway_for(keycloak_gateway, fake_bus(), policy) as url:
        refused = await post(url, agent)
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_token"


async def test_introspection_sees_a_revoked_token_at_once(
    keycloak_gateway: tuple[str, int],
) -> None:
    base = f"{keycloak_gateway[0]}/realms/{MCP_REALM}/protocol/openid-connect"
    introspection = {
        "url": f"{base}/token/introspect",
        "client_id": "gateway",
        "client_secret": CLIENT_SECRETS["gateway"],
        "always": True,
    }
    agent = await token_of(keycloak_gateway, "agent")
    policy = policy_for(keycloak_gateway, introspection=introspection)
    bus = fake_bus()
    async with gateway_for(keycloak_gateway, bus, policy) as url:
        async with client_for(url, agent) as client:
            before = await client.call_tool("count", {"steps": 1})
        async with httpx.AsyncClient(timeout=60) as http:
            revoked = await http.post(
                f"{base}/revoke",
                data={"token": agent, "token_type_hint": "access_token"},
                auth=("agent", CLIENT_SECRETS["agent"]),
            )
        after = await post(url, agent)
    assert before.content[0].text == "counted 1"  # type: ignore[union-attr]
    assert {s.principal for s in bus.sessions} == {"agent"}
    assert revoked.status_code == 200
    assert after.status_code == 401
    assert after.json()["error_description"] == "token is not active"


async def test_with_keycloak_gone_the_gateway_fails_closed_quickly(
    keycloak_gateway: tuple[str, int],
) -> None:
    # An issuer on a port nobody listens on: Keycloak's realm, but unreachable.
    agent = await token_of(keycloak_gateway, "agent")
    policy = policy_for(keycloak_gateway, fetch_timeout_s=2.0)
    policy["oauth"]["jwks_url"] = "http://127.0.0.1:9/certs"
    async with gateway_for(keycloak_gateway, fake_bus(), policy) as url:
        async with asyncio.timeout(60):
            refused = await post(url, agent)
    assert refused.status_code == 503
    assert "cannot reach the issuer's JWKS" in refused.json()["error_description"]
