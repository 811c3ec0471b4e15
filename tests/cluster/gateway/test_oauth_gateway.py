"""The gateway as an OAuth 2.1 resource server, over real HTTP, with an issuer of our own
(tests/cluster/gateway/policy/local_issuer.py). The same door against a real
authorization server (Keycloak) is tested in test_oauth_keycloak.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import mcp
import pytest
from mcp.client.streamable_http import streamable_http_client

from cluster.gateway.policy.chain import PolicyConfig
from cluster.gateway.policy.oauth import TokenVerifier
from cluster.gateway.policy.resource_server import OAuthBearerAuth
from cluster.gateway.policy.settings import OAuthConfig
from cluster.gateway.policy.tokens import TokenTable, hash_token
from cluster.gateway.server import Gateway
from tests.cluster.gateway.fake_bus import FakeBus, fake_bus
from tests.cluster.gateway.policy.local_issuer import AUDIENCE, LocalIssuer, local_issuer
from tests.cluster.gateway.serving import serving
from tests.cluster.gateway.test_http_guards import Inner, call

METADATA_URL = "http://127.0.0.1:8765/.well-known/oauth-protected-resource/mcp"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
STATIC_TOKEN = "static-token-for-ci"


def call_echo(request_id: int = 7) -> dict[str, Any]:
    params = {"name": "echo", "arguments": {"text": "hi"}}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


def oauth_policy(issuer: LocalIssuer, **more: Any) -> dict[str, Any]:
    return {
        "oauth": {
            "issuer": issuer.issuer,
            "audience": AUDIENCE,
            "required_scopes": ["mcp"],
            "tool_scopes": {"echo": ["tools.echo"]},
            "fetch_timeout_s": 2.0,
        },
        "tokens": [{"principal": "ci", "sha256": hash_token(STATIC_TOKEN)}],
        **more,
    }


@pytest.fixture
async def issuer() -> AsyncIterator[LocalIssuer]:
    async with local_issuer() as served:
        yield served


async def served(issuer: LocalIssuer, bus: FakeBus, **more: Any) -> Any:
    policy = oauth_policy(issuer, **more)
    return serving(Gateway(bus, policy=PolicyConfig.model_validate(policy)), policy)


def client_for(url: str, token: str) -> mcp.Client:
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    return mcp.Client(streamable_http_client(url, http_client=http), mode="legacy")


async def test_the_resource_metadata_is_served_at_both_well_known_paths(
    issuer: LocalIssuer,
) -> None:
    async with await served(issuer, fake_bus()) as url, httpx.AsyncClient() as http:
        base = url.removesuffix("/mcp")
        plain = await http.get(base + "/.well-known/oauth-protected-resource")
        suffixed = await http.get(base + "/.well-known/oauth-protected-resource/mcp")
        posted = await http.post(base + "/.well-known/oauth-protected-resource/mcp")
    assert plain.status_code == suffixed.status_code == 200
    assert plain.json() == suffixed.json()
    document = suffixed.json()
    assert document["resource"] == AUDIENCE
    assert document["authorization_servers"] == [issuer.issuer]
    assert document["scopes_supported"] == ["mcp", "tools.echo"]
    assert document["bearer_methods_supported"] == ["header"]
    assert posted.status_code == 405


async def test_without_a_token_the_challenge_points_at_the_metadata(issuer: LocalIssuer) -> None:
    async with await served(issuer, fake_bus()) as url, httpx.AsyncClient() as http:
        answer = await http.post(url, json=call_echo(), headers=ACCEPT)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{METADATA_URL}", scope="mcp"'
    )


@pytest.mark.parametrize(
    ("authorization", "why"),
    [
        ("Bearer not-a-jwt", "malformed token: not a JWT"),
        ("Basic dXNlcjpwYXNz", "a Bearer token is required"),
        ("Bearer " + "x" * 20_000, "malformed or oversized token"),
    ],
)
async def test_a_bad_token_gets_401_invalid_token(
    issuer: LocalIssuer, authorization: str, why: str
) -> None:
    async with await served(issuer, fake_bus()) as url, httpx.AsyncClient() as http:
        answer = await http.post(
            url, json=call_echo(), headers={**ACCEPT, "Authorization": authorization}
        )
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{METADATA_URL}", error="invalid_token", scope="mcp"'
    )
    assert answer.json() == {"error": "invalid_token", "error_description": why}
    assert issuer.jwks_fetches == 0


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"exp": 1_000_000}, "token expired"),
        ({"aud": "http://127.0.0.1:9999/mcp"}, "token is for another audience"),
        ({"iss": "http://127.0.0.1:1/realms/test"}, "token is from another issuer"),
    ],
)
async def test_tokens_the_issuer_did_not_mint_for_us_get_401(
    issuer: LocalIssuer, overrides: dict[str, Any], why: str
) -> None:
    token = issuer.token(**overrides)
    async with await served(issuer, fake_bus()) as url, httpx.AsyncClient() as http:
        answer = await http.post(
            url, json=call_echo(), headers={**ACCEPT, "Authorization": f"Bearer {token}"}
        )
    assert answer.status_code == 401
    assert answer.json()["error_description"] == why


async def test_a_token_without_the_required_scope_gets_403_naming_it(issuer: LocalIssuer) -> None:
    token = issuer.token(scope="tools.echo")
    async with await served(issuer, fake_bus()) as url, httpx.AsyncClient() as http:
        answer = await http.post(
            url, json=call_echo(), headers={**ACCEPT, "Authorization": f"Bearer {token}"}
        )
    assert answer.status_code == 403
    assert answer.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{METADATA_URL}", error="insufficient_scope", scope="mcp"'
    )


async def test_a_tool_needing_a_scope_the_token_lacks_gets_403_before_the_bus(
    issuer: LocalIssuer,
) -> None:
    bus = fake_bus()
    token = issuer.token(scope="mcp")
    async with await served(issuer, bus) as url:
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                url, json=call_echo(41), headers={**ACCEPT, "Authorization": f"Bearer {token}"}
            )
        async with client_for(url, token) as client:
            counted = await client.call_tool("count", {"steps": 1})  # needs no extra scope
    assert answer.status_code == 403
    assert answer.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{METADATA_URL}", error="insufficient_scope", '
        'scope="mcp tools.echo"'
    )
    assert answer.json()["id"] == 41
    assert answer.json()["error"]["message"] == "tool 'echo' needs scope tools.echo"
    assert counted.content[0].text == "counted 1"  # type: ignore[union-attr]
    assert [c.name for c in bus.calls] == ["count"]


async def test_a_valid_token_reaches_the_bus_as_its_principal_and_goes_no_further(
    issuer: LocalIssuer,
) -> None:
    bus = fake_bus()
    token = issuer.token()
    gateway_policy = oauth_policy(issuer, allow={"user-1": ["echo"]})
    gateway = Gateway(bus, policy=PolicyConfig.model_validate(gateway_policy))
    async with serving(gateway, gateway_policy) as url, client_for(url, token) as client:
        echoed = await client.call_tool("echo", {"text": "hi"})
        with pytest.raises(mcp.MCPError):  # the allow-list knows the token's subject
            await client.call_tool("count", {"steps": 1})
    assert echoed.content[0].text == "hi"  # type: ignore[union-attr]
    assert {s.principal for s in bus.sessions} == {"user-1"}
    assert await asyncio.to_thread(gateway.audit.flush)
    records = list(gateway.audit.records)
    calls = [r for r in records if r.get("tool") == "echo"]
    assert calls
    assert calls[0]["subject"] == "user-1"
    assert calls[0]["client_id"] == "agent"
    assert calls[0]["scopes"] == ["mcp", "tools.echo"]
    # Neither the token nor any piece of it travelled on: not to the bus, not into the
    # calls' parameters or _meta, not into the audit log.
    signature = token.rsplit(".", 1)[1]
    seen = json.dumps([c.params for c in bus.calls]) + json.dumps(records, default=str)
    assert signature not in seen
    assert "authorization" not in seen.lower()


async def test_static_tokens_keep_working_beside_oauth(issuer: LocalIssuer) -> None:
    bus = fake_bus()
    async with await served(issuer, bus) as url, client_for(url, STATIC_TOKEN) as client:
        echoed = await client.call_tool("echo", {"text": "static"})
    assert echoed.content[0].text == "static"  # type: ignore[union-attr]
    assert {s.principal for s in bus.sessions} == {"ci"}
    assert issuer.jwks_fetches == 0


async def test_an_issuer_that_is_down_gets_503_with_the_reason_not_a_hang() -> None:
    async with local_issuer() as gone:
        token = gone.token()
    async with await served(gone, fake_bus()) as url, httpx.AsyncClient() as http:
        async with asyncio.timeout(60):  # generous: the gateway's own bound is 2 s
            answer = await http.post(
                url, json=call_echo(), headers={**ACCEPT, "Authorization": f"Bearer {token}"}
            )
    assert answer.status_code == 503
    assert answer.json()["error"] == "temporarily_unavailable"
    assert "cannot reach the issuer's metadata" in answer.json()["error_description"]


async def test_the_door_hands_on_the_principal_without_the_credential(issuer: LocalIssuer) -> None:
    config = OAuthConfig.model_validate(oauth_policy(issuer)["oauth"])
    verifier = TokenVerifier(config)
    inner = Inner()
    door = OAuthBearerAuth(inner, verifier, TokenTable({}))
    token = issuer.token()
    try:
        answered = await call(door, headers={"Authorization": f"Bearer {token}", "X-Other": "1"})
        handshake = await call(door, kind="websocket", headers={"Authorization": f"Bearer {token}"})
        anonymous = await call(door, kind="websocket")
    finally:
        await verifier.aclose()
    assert answered[0]["status"] == 200
    assert handshake == [{"type": "websocket.accept"}]
    assert anonymous == [{"type": "websocket.close", "code": 1008}]
    http_scope, websocket_scope = inner.scopes
    assert [k for k, _ in http_scope["headers"]] == [b"host", b"x-other"]
    assert [k for k, _ in websocket_scope["headers"]] == [b"host"]
    assert http_scope["state"]["raybus_principal"] == "user-1"
    assert websocket_scope["state"]["raybus_principal"] == "user-1"


async def test_a_websocket_session_ends_when_its_access_token_expires(issuer: LocalIssuer) -> None:
    import websockets

    policy = oauth_policy(issuer, allow={"user-1": ["echo"]})
    policy["oauth"]["leeway_s"] = 0.0
    gateway = Gateway(fake_bus(), policy=PolicyConfig.model_validate(policy))
    expires = int(time.time()) + 4
    token = issuer.token(exp=expires)
    async with serving(gateway, policy) as url:
        ws_url = url.replace("http://", "ws://").replace("/mcp", "/ws")
        auth = {"Authorization": f"Bearer {token}"}
        async with asyncio.timeout(60), websockets.connect(ws_url, additional_headers=auth) as ws:
            await ws.send(json.dumps(INITIALIZE))
            answer = json.loads(await ws.recv())
            assert answer["id"] == 1
            assert "result" in answer  # served while the token is valid
            await ws.wait_closed()  # nothing more is sent: only the expiry can end this
    assert ws.close_code == 1008
    assert ws.close_reason == "access token expired"
    assert time.time() >= expires  # at the expiry, not before it


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "ws", "version": "1"},
    },
}


async def test_a_refusal_after_the_token_was_verified_is_audited_with_who_it_speaks_for(
    issuer: LocalIssuer,
) -> None:
    token = issuer.token(scope="mcp")
    policy = oauth_policy(issuer)
    gateway = Gateway(fake_bus(), policy=PolicyConfig.model_validate(policy))
    async with serving(gateway, policy) as url, httpx.AsyncClient() as http:
        answer = await http.post(
            url, json=call_echo(43), headers={**ACCEPT, "Authorization": f"Bearer {token}"}
        )
    assert answer.status_code == 403
    assert await asyncio.to_thread(gateway.audit.flush)
    refused = [r for r in gateway.audit.records if str(r["outcome"]).startswith("refused 403")]
    assert len(refused) == 1
    assert refused[0]["principal"] == "user-1"
    assert refused[0]["tool"] == "echo"
    assert refused[0]["subject"] == "user-1"
    assert refused[0]["client_id"] == "agent"
    assert refused[0]["scopes"] == ["mcp"]
    assert token.rsplit(".", 1)[1] not in json.dumps(refused, default=str)


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_tokens_claim_pins_its_label_on_every_call_and_a_bad_one_is_refused(
    issuer: LocalIssuer, mode: str
) -> None:
    bus = fake_bus()
    policy = oauth_policy(issuer)
    policy["oauth"]["label_claims"] = {"region": "data_region"}
    gateway = Gateway(bus, policy=PolicyConfig.model_validate(policy))
    eu = issuer.token(data_region="eu")
    async with serving(gateway, policy) as url:
        http = httpx.AsyncClient(headers={"Authorization": f"Bearer {eu}"})
        transport = streamable_http_client(url, http_client=http)
        async with mcp.Client(transport, mode=mode) as client:
            assert not (await client.call_tool("echo", {"text": "plain"})).is_error
            contradicting = {"io.raybus/labels": {"region": "us"}}
            with pytest.raises(mcp.MCPError) as refused:
                await client.call_tool("echo", {"text": "hi"}, meta=contradicting)  # type: ignore[arg-type]
        async with httpx.AsyncClient() as raw:
            unpinned = issuer.token()  # no claim: its calls are not pinned
            plain = await raw.post(
                url, json=call_echo(), headers={**ACCEPT, "Authorization": f"Bearer {unpinned}"}
            )
            bad = issuer.token(data_region="EU!")  # not a label value: fail closed
            refused_token = await raw.post(
                url, json=call_echo(), headers={**ACCEPT, "Authorization": f"Bearer {bad}"}
            )
    assert refused.value.error.code == 1010
    assert refused.value.error.data == {"region": "us", "tool": "echo", "reason": "conflict"}
    assert plain.status_code != 401
    assert refused_token.status_code == 401
    assert refused_token.json()["error_description"] == (
        "token claim 'data_region' is not a valid 'region' label"
    )
    labels = [c.labels for c in bus.calls if c.method == "tools/call"]
    assert labels[0] == {"region": "eu"}
    assert {"region": "us"} not in labels


def test_label_claims_are_checked_naming_the_label() -> None:
    with pytest.raises(ValueError, match="label key 'Region!' must match"):
        OAuthConfig.model_validate(
            {
                "issuer": "http://127.0.0.1:1/r",
                "audience": AUDIENCE,
                "label_claims": {"Region!": "r"},
            }
        )
