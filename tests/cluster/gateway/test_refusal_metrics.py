"""The gateway counts what it refuses, by reason, at the door and in the policy chain."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from starlette.types import Receive, Scope, Send

from cluster.gateway.policy.audit import AuditLog
from cluster.gateway.policy.chain import PolicyConfig, PolicyMiddleware
from cluster.gateway.policy.http_guards import (
    AuditDoor,
    BearerAuth,
    HostOriginGuard,
    JsonBodyGuard,
    RateLimitGate,
)
from cluster.gateway.policy.oauth import TokenVerifier
from cluster.gateway.policy.resource_server import OAuthBearerAuth
from cluster.gateway.policy.settings import OAuthConfig
from cluster.gateway.policy.tokens import TokenTable, hash_token
from cluster.gateway.server import Gateway
from cluster.gateway.websocket import websocket_route
from cluster.metrics.exposition import render
from cluster.metrics.recorders import GatewayRecorder
from cluster.metrics.registry import MetricsRegistry
from tests.actors.fakes import FakeClock
from tests.cluster.gateway.fake_bus import fake_bus
from tests.cluster.gateway.policy.local_issuer import AUDIENCE, local_issuer
from tests.cluster.gateway.test_http_guards import AUTH, HOSTS, ORIGINS, PING, Inner, call
from tests.cluster.gateway.test_policy_middleware import CALL, Downstream, ctx, run
from tests.cluster.metrics.prometheus_text import parse
from transports.codec import DecodeLimits


def refusals_of(registry: MetricsRegistry) -> dict[str, float]:
    page = parse(render(registry.snapshot()))
    return {s["reason"]: v for n, s, v in page.samples if n == "raybus_gateway_refused_total"}


def counted_door(inner: Any, registry: MetricsRegistry) -> Any:
    """The door of test_http_guards, rate-limited (one request, then one per 100 s)."""
    audit = AuditLog(None)
    config = {"rate_limit_per_principal": {"rate_per_s": 0.01, "burst": 1}}
    policy = PolicyMiddleware(
        PolicyConfig.model_validate(config), _no_tools, audit, clock=FakeClock()
    )
    tokens = TokenTable({hash_token("good-token"): "alice"})
    gated = JsonBodyGuard(RateLimitGate(inner, policy.rate_refusal), DecodeLimits(1000))
    guarded = HostOriginGuard(BearerAuth(gated, tokens), HOSTS, ORIGINS)
    return AuditDoor(guarded, audit, GatewayRecorder(registry))


async def _no_tools() -> dict[str, dict[str, Any]]:
    return {}


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({}, PING, "authentication_required"),
        ({"authorization": "Bearer wrong"}, PING, "invalid_token"),
        ({**AUTH, "host": "evil.example"}, PING, "host_or_origin"),
        ({**AUTH, "origin": "http://evil.example"}, PING, "host_or_origin"),
        (AUTH, b"{nope", "parse_error"),
        (AUTH, b"[1]", "invalid_request"),
        (AUTH, b"x" * 5000, "body_too_large"),
    ],
)
async def test_each_refusal_at_the_door_is_counted_once_by_its_reason(
    headers: dict[str, str], body: bytes, reason: str
) -> None:
    registry = MetricsRegistry("demo")
    await call(counted_door(Inner(), registry), body=body, headers=headers)
    assert refusals_of(registry) == {reason: 1}


async def test_the_rate_limit_at_the_door_counts_and_passed_requests_do_not() -> None:
    registry = MetricsRegistry("demo")
    app = counted_door(Inner(), registry)
    statuses = [(await call(app, body=PING, headers=AUTH))[0]["status"] for _ in range(3)]
    assert statuses == [200, 429, 429]
    assert refusals_of(registry) == {"rate_limited": 2}


async def test_an_issuer_that_is_down_is_a_refusal_counted_by_its_reason() -> None:
    # The door fails closed with 503: a refusal like any other, though not a 4xx.
    async with local_issuer() as gone:
        token = gone.token()
        config = OAuthConfig.model_validate(
            {"issuer": gone.issuer, "audience": AUDIENCE, "fetch_timeout_s": 2.0}
        )
    registry = MetricsRegistry("demo")
    verifier = TokenVerifier(config)
    door = OAuthBearerAuth(Inner(), verifier, TokenTable({}))
    try:
        sent = await call(
            AuditDoor(door, AuditLog(None), GatewayRecorder(registry)),
            body=PING,
            headers={"authorization": f"Bearer {token}"},
        )
    finally:
        await verifier.aclose()
    assert sent[0]["status"] == 503
    assert refusals_of(registry) == {"authorization_server_unavailable": 1}


async def test_a_server_error_without_a_guards_reason_is_not_a_refusal() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"boom"})

    registry = MetricsRegistry("demo")
    await call(AuditDoor(failing, AuditLog(None), GatewayRecorder(registry)), body=PING)
    assert refusals_of(registry) == {}


async def test_the_sdks_own_client_errors_are_counted_by_status() -> None:
    async def unknown_session(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    registry = MetricsRegistry("demo")
    door = AuditDoor(unknown_session, AuditLog(None), GatewayRecorder(registry))
    await call(door, body=PING)
    assert refusals_of(registry) == {"http_404": 1}


async def test_the_policy_chain_counts_what_it_refuses() -> None:
    registry = MetricsRegistry("demo")
    downstream = Downstream()
    policy = PolicyConfig.model_validate(
        {"allow": {"bob": ["echo"]}, "rate_limit_per_principal": {"rate_per_s": 0.01, "burst": 3}}
    )
    middleware = PolicyMiddleware(
        policy, downstream.tools, AuditLog(None), FakeClock(), GatewayRecorder(registry)
    )
    await run(middleware, downstream, ctx("tools/call", CALL))  # allowed and valid
    refused = [
        ctx("tools/call", {"name": "secret", "arguments": {}}),
        ctx("tools/call", {"name": "echo", "arguments": {"text": 7}}),
        ctx("tools/call", CALL),  # the bucket is empty by now
    ]
    for context in refused:
        with pytest.raises(MCPError):
            await run(middleware, downstream, context)
    assert refusals_of(registry) == {"not_allowed": 1, "invalid_arguments": 1, "rate_limited": 1}
    assert downstream.handled == ["tools/call"]


async def test_frames_refused_on_the_websocket_are_counted_and_the_connection_stays() -> None:
    registry = MetricsRegistry("demo")
    gateway = Gateway(fake_bus(), metrics=registry)
    route = websocket_route(gateway.server, "/ws", DecodeLimits(), gateway.audit, gateway.refusals)
    inbox = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "{nope"},
        {"type": "websocket.receive", "text": "[1]"},
    ]
    answered = asyncio.Event()
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if inbox:
            return inbox.pop(0)
        await answered.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)
        if sum(m["type"] == "websocket.send" for m in sent) == 2:
            answered.set()

    scope = {"type": "websocket", "path": "/ws", "headers": [], "subprotocols": []}
    async with asyncio.timeout(30):
        await route.app(scope, receive, send)
    assert refusals_of(registry) == {"parse_error": 1, "invalid_request": 1}
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.send"]
