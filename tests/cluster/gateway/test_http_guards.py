"""The gateway's door (ASGI guards), driven without Ray or a server."""

from __future__ import annotations

import json
from typing import Any

import pytest
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
from cluster.gateway.policy.tokens import TokenTable, hash_token
from tests.actors.fakes import FakeClock
from transports.codec import DecodeLimits
from transports.errors import BusErrorCode

HOSTS = ["127.0.0.1:*"]
ORIGINS = ["http://127.0.0.1:*"]


class Inner:
    """The app behind the guards: records what reached it and answers 200."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] == "websocket":
            await send({"type": "websocket.accept"})
            return
        message = await receive()
        self.bodies.append(message.get("body", b""))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def call(
    app: Any,
    *,
    kind: str = "http",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    chunk: int | None = None,
) -> list[dict[str, Any]]:
    scope = {
        "type": kind,
        "method": "POST" if kind == "http" else None,
        "path": "/mcp" if kind == "http" else "/ws",
        "headers": [
            (k.lower().encode(), v.encode())
            for k, v in {"host": "127.0.0.1:8765", **(headers or {})}.items()
        ],
    }
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    messages = [
        {"type": "http.request", "body": piece, "more_body": n < len(pieces) - 1}
        for n, piece in enumerate(pieces)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def door(inner: Inner, audit: AuditLog, max_bytes: int = 1000) -> Any:
    tokens = TokenTable({hash_token("good-token"): "alice"})
    guarded = BearerAuth(JsonBodyGuard(inner, DecodeLimits(max_message_bytes=max_bytes)), tokens)
    return AuditDoor(HostOriginGuard(guarded, HOSTS, ORIGINS), audit)


AUTH = {"authorization": "Bearer good-token"}
PING = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'


@pytest.mark.parametrize("origin", ["http://evil.example", "null"])
async def test_a_foreign_or_null_origin_on_the_websocket_is_refused_before_accept(
    origin: str,
) -> None:
    inner, audit = Inner(), AuditLog(None)
    sent = await call(door(inner, audit), kind="websocket", headers={**AUTH, "origin": origin})
    # A close before accept is answered with HTTP 403; an http.response.* message on a
    # WebSocket scope made the server answer 500.
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert inner.scopes == []
    assert audit.close()
    assert [r["outcome"] for r in audit.records] == ["refused 403 host_or_origin"]


async def test_the_websocket_carries_the_authenticated_principal() -> None:
    inner = Inner()
    await call(door(inner, AuditLog(None)), kind="websocket", headers=AUTH)
    assert inner.scopes[0]["state"]["raybus_principal"] == "alice"


@pytest.mark.parametrize(
    ("headers", "body", "status", "outcome"),
    [
        ({}, PING, 401, "refused 401 authentication_required"),
        ({"authorization": "Bearer wrong"}, PING, 401, "refused 401 invalid_token"),
        ({**AUTH, "host": "evil.example"}, PING, 403, "refused 403 host_or_origin"),
        ({**AUTH, "origin": "http://evil.example"}, PING, 403, "refused 403 host_or_origin"),
        (AUTH, b"{nope", 400, "refused 400 parse_error"),
        (AUTH, b"x" * 5000, 413, "refused 413 body_too_large"),
    ],
)
async def test_every_request_refused_at_the_door_leaves_one_audit_record(
    headers: dict[str, str], body: bytes, status: int, outcome: str
) -> None:
    inner, audit = Inner(), AuditLog(None)
    sent = await call(door(inner, audit), body=body, headers=headers, chunk=512)
    assert sent[0]["status"] == status
    assert inner.bodies == []
    assert audit.close()
    assert [r["outcome"] for r in audit.records] == [outcome]


async def test_a_request_that_passes_the_door_is_not_recorded_by_it() -> None:
    inner, audit = Inner(), AuditLog(None)
    sent = await call(door(inner, audit), body=PING, headers=AUTH, chunk=7)
    assert sent[0]["status"] == 200
    assert inner.bodies == [PING]  # handed on whole and unchanged
    assert inner.scopes[0]["state"]["raybus_method"] == "ping"
    assert audit.close()
    assert list(audit.records) == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"a":1,"a":2}}', -32700),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"x":NaN}}', -32700),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"x":1e999}}', -32700),
        (b'{"jsonrpc":"2.0","id":1,"method":"x","params":"\xff"}', -32700),
        (b'{"a":' * 100 + b"1" + b"}" * 100, -32700),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', -32600),
        (b"42", -32600),
        # JSON-RPC ids are strings or integers: the SDK ran such calls, echoing the id.
        (b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', -32600),
        (b'{"jsonrpc":"2.0","id":true,"method":"ping"}', -32600),
        (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', -32600),
        (b'{"jsonrpc":"2.0","id":[1],"method":"ping"}', -32600),
    ],
)
async def test_bodies_failing_the_codec_checks_get_a_json_rpc_error(body: bytes, code: int) -> None:
    inner = Inner()
    sent = await call(JsonBodyGuard(inner, DecodeLimits()), body=body)
    assert sent[0]["status"] == 400
    answer = json.loads(sent[1]["body"])
    assert answer["error"]["code"] == code
    assert answer["id"] is None
    assert inner.bodies == []


def rate_limited_door(inner: Inner, audit: AuditLog, *, burst: float = 1) -> Any:
    """The door with a rate gate: alice gets ``burst`` requests, then one per 100 s."""
    policy = PolicyMiddleware(
        PolicyConfig.model_validate(
            {"rate_limit_per_principal": {"rate_per_s": 0.01, "burst": burst}}
        ),
        _no_tools,
        audit,
        clock=FakeClock(),
    )
    tokens = TokenTable({hash_token("good-token"): "alice"})
    gated = JsonBodyGuard(RateLimitGate(inner, policy.rate_refusal), DecodeLimits())
    return AuditDoor(HostOriginGuard(BearerAuth(gated, tokens), HOSTS, ORIGINS), audit)


async def _no_tools() -> dict[str, dict[str, Any]]:
    return {}


async def test_a_request_over_the_rate_limit_is_answered_at_the_door() -> None:
    inner, audit = Inner(), AuditLog(None)
    app = rate_limited_door(inner, audit)
    assert (await call(app, body=PING, headers=AUTH))[0]["status"] == 200
    call_body = b'{"jsonrpc":"2.0","id":"r-7","method":"tools/call","params":{"name":"echo"}}'
    sent = await call(app, body=call_body, headers=AUTH)
    assert sent[0]["status"] == 429
    headers = dict(sent[0]["headers"])
    assert headers[b"retry-after"] == b"100"  # whole seconds, rounded up
    answer = json.loads(sent[1]["body"])
    # The request's own id, so the SDK's client hands the error to the waiting call.
    assert answer["id"] == "r-7"
    assert answer["error"]["code"] == BusErrorCode.RATE_LIMITED
    assert answer["error"]["data"] == {"retryAfterSeconds": 100.0}
    assert "retry in 100.000 s" in answer["error"]["message"]
    assert len(inner.bodies) == 1  # the refused request never reached the SDK
    assert inner.scopes[0]["state"]["raybus_rate_charged"] is True
    assert audit.close()
    [record] = audit.records  # the passed ping is the policy chain's to record
    assert record["outcome"] == "refused 429 rate_limited"
    assert (record["principal"], record["method"]) == ("alice", "tools/call")


async def test_notifications_and_responses_spend_no_tokens_at_the_door() -> None:
    inner, audit = Inner(), AuditLog(None)
    app = rate_limited_door(inner, audit)
    notification = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
    response = b'{"jsonrpc":"2.0","id":3,"result":{}}'
    for body in (notification, response, notification):
        assert (await call(app, body=body, headers=AUTH))[0]["status"] == 200
    assert (await call(app, body=PING, headers=AUTH))[0]["status"] == 200
    assert (await call(app, body=PING, headers=AUTH))[0]["status"] == 429


async def test_header_values_reach_the_app_without_surrounding_whitespace() -> None:
    inner = Inner()
    headers = {**AUTH, "mcp-name": "  echo\t", "mcp-method": "tools/call "}
    await call(door(inner, AuditLog(None)), body=PING, headers=headers)
    seen = dict(inner.scopes[0]["headers"])
    assert (seen[b"mcp-name"], seen[b"mcp-method"]) == (b"echo", b"tools/call")


class EmptyRefusal:
    """Answers as the SDK does a wrong Accept: 406, no body."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-length", b"0"), (b"allow", b"POST")]
        await send({"type": "http.response.start", "status": 406, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


async def test_a_refusal_sent_without_a_body_gets_one_that_says_why() -> None:
    audit = AuditLog(None)
    sent = await call(AuditDoor(EmptyRefusal(), audit), body=PING)
    body = b"406 Not Acceptable: Accept must list application/json and text/event-stream\n"
    assert sent[0]["status"] == 406
    assert dict(sent[0]["headers"]) == {
        b"allow": b"POST",
        b"content-type": b"text/plain; charset=utf-8",
        b"content-length": str(len(body)).encode(),
    }
    assert sent[1]["body"] == body
    assert audit.close()
    assert [r["outcome"] for r in audit.records] == ["refused 406"]


async def test_a_request_without_the_jsonrpc_member_is_refused_with_its_id() -> None:
    inner = Inner()
    sent = await call(JsonBodyGuard(inner, DecodeLimits()), body=b'{"id":"r1","method":"ping"}')
    assert sent[0]["status"] == 400
    answer = json.loads(sent[1]["body"])
    assert (answer["id"], answer["error"]["code"]) == ("r1", -32600)
    assert inner.bodies == []
