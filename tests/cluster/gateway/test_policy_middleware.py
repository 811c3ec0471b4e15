"""The per-request policy chain, driven as the SDK drives it but without Ray or HTTP."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
import pytest
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError

from cluster.gateway.policy.audit import AuditLog
from cluster.gateway.policy.chain import PolicyConfig, PolicyMiddleware
from cluster.gateway.policy.oauth import TokenPrincipal
from tests.actors.fakes import FakeClock
from transports.errors import BusErrorCode

SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}}


class Downstream:
    """Counts the work a request caused: catalog fetches and handler calls."""

    def __init__(self, result: Any = None) -> None:
        self.catalog_fetches = 0
        self.handled: list[str] = []
        self.result = result

    async def tools(self) -> dict[str, dict[str, Any]]:
        self.catalog_fetches += 1
        return {"echo": {"name": "echo", "inputSchema": SCHEMA}}

    async def call_next(self, ctx: ServerRequestContext[Any, Any]) -> Any:
        self.handled.append(ctx.method)
        return self.result if self.result is not None else {}


class Request:
    def __init__(self, state: dict[str, Any]) -> None:
        self.scope = {"state": state}


def ctx(
    method: str, params: dict[str, Any] | None = None, *, principal: str = "bob", **state: Any
) -> ServerRequestContext[Any, Any]:
    return ServerRequestContext(
        session=None,  # type: ignore[arg-type]
        lifespan_context=None,
        protocol_version="2025-11-25",
        method=method,
        params=params,
        request_id=1,
        request=Request({"raybus_principal": principal, **state}),
    )


def chain(
    downstream: Downstream, clock: FakeClock | None = None, **config: Any
) -> tuple[PolicyMiddleware, AuditLog]:
    audit = AuditLog(None)
    policy = PolicyConfig.model_validate(config)
    return PolicyMiddleware(policy, downstream.tools, audit, clock=clock or FakeClock()), audit


async def run(
    middleware: PolicyMiddleware,
    downstream: Downstream,
    context: ServerRequestContext[Any, Any],
) -> Any:
    handler: Callable[[ServerRequestContext[Any, Any]], Awaitable[Any]] = downstream.call_next
    return await middleware(context, handler)


CALL = {"name": "echo", "arguments": {"text": "hi bob@example.org"}}


async def test_a_rate_limited_call_does_no_downstream_work_and_hints_when_to_retry() -> None:
    downstream, clock = Downstream(), FakeClock()
    middleware, audit = chain(
        downstream, clock, rate_limit_per_principal={"rate_per_s": 4, "burst": 1}
    )
    await run(middleware, downstream, ctx("tools/call", CALL))
    fetched, handled = downstream.catalog_fetches, list(downstream.handled)
    clock.advance(0.1)
    with pytest.raises(MCPError) as limited:
        await run(middleware, downstream, ctx("tools/call", CALL))
    assert limited.value.code == BusErrorCode.RATE_LIMITED
    # One token every 0.25 s, 0.1 s after the last one was spent: 0.15 s to wait.
    assert limited.value.data == {"retryAfterSeconds": pytest.approx(0.15)}
    assert "retry in 0.150 s" in limited.value.message
    assert (downstream.catalog_fetches, downstream.handled) == (fetched, handled)
    assert audit.close()
    refused = audit.records[-1]
    assert refused["outcome"] == f"error {BusErrorCode.RATE_LIMITED}"
    assert "arguments" not in refused  # nothing about a refused call's arguments is computed


async def test_a_tiny_wait_is_still_a_real_hint() -> None:
    downstream, clock = Downstream(), FakeClock()
    middleware, _ = chain(
        downstream, clock, rate_limit_per_principal={"rate_per_s": 1000, "burst": 1}
    )
    await run(middleware, downstream, ctx("ping"))
    clock.advance(0.0009999)
    with pytest.raises(MCPError) as limited:
        await run(middleware, downstream, ctx("ping"))
    assert limited.value.data["retryAfterSeconds"] == 0.001
    assert "0.00 s" not in limited.value.message


async def test_the_principal_limit_covers_every_method_not_only_tool_calls() -> None:
    downstream = Downstream()
    middleware, _ = chain(downstream, rate_limit_per_principal={"rate_per_s": 0.001, "burst": 2})
    await run(middleware, downstream, ctx("resources/read", {"uri": "kit://a"}))
    await run(middleware, downstream, ctx("prompts/list"))
    with pytest.raises(MCPError) as limited:
        await run(middleware, downstream, ctx("resources/read", {"uri": "kit://a"}))
    assert limited.value.code == BusErrorCode.RATE_LIMITED


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("resources/read", {"uri": "testkit://greeting"}),
        ("prompts/get", {"name": "greet"}),
        ("completion/complete", {"ref": {"type": "ref/prompt", "name": "greet"}}),
        ("resources/subscribe", {"uri": "testkit://greeting"}),
        ("tools/call", {"name": "dump_request", "arguments": {}}),
    ],
)
async def test_an_allow_list_of_tools_refuses_resources_prompts_and_completions(
    method: str, params: dict[str, Any]
) -> None:
    downstream = Downstream()
    middleware, audit = chain(downstream, allow={"bob": ["echo"]})
    with pytest.raises(MCPError) as refused:
        await run(middleware, downstream, ctx(method, params))
    assert refused.value.code == BusErrorCode.FORBIDDEN
    assert downstream.handled == []
    assert audit.close()
    assert [r["outcome"] for r in audit.records] == [f"error {BusErrorCode.FORBIDDEN}"]


async def test_lists_show_only_what_the_principal_may_use() -> None:
    listed = types.ListResourcesResult(
        resources=[
            types.Resource(uri="kit://open", name="open"),
            types.Resource(uri="kit://items/1", name="item"),
            types.Resource(uri="kit://secret", name="secret"),
        ]
    )
    downstream = Downstream(listed)
    allow = {"bob": ["echo", "resource:kit://open", "resource:kit://items/{id}"]}
    middleware, _ = chain(downstream, allow=allow)
    result = await run(middleware, downstream, ctx("resources/list"))
    assert [str(r.uri) for r in result.resources] == ["kit://open", "kit://items/1"]
    downstream.result = {"prompts": [{"name": "greet"}], "nextCursor": None}
    assert (await run(middleware, downstream, ctx("prompts/list")))["prompts"] == []
    downstream.result = types.ListResourceTemplatesResult(
        resource_templates=[
            types.ResourceTemplate(uri_template="kit://items/{id}", name="items"),
            types.ResourceTemplate(uri_template="kit://other/{id}", name="other"),
        ]
    )
    templates = await run(middleware, downstream, ctx("resources/templates/list"))
    assert [t.uri_template for t in templates.resource_templates] == ["kit://items/{id}"]


async def test_one_record_per_client_request_and_none_for_the_sdks_own_lookups() -> None:
    downstream = Downstream()
    middleware, audit = chain(
        downstream, allow={"bob": ["echo"]}, rate_limit_per_principal={"rate_per_s": 1, "burst": 1}
    )
    # The SDK lists tools while serving a tools/call (Mcp-Param header checks): the
    # client sent one request, so one record and one token.
    await run(middleware, downstream, ctx("tools/list", raybus_method="tools/call"))
    await run(middleware, downstream, ctx("tools/call", CALL, raybus_method="tools/call"))
    assert downstream.handled == ["tools/list", "tools/call"]
    assert audit.close()
    assert [(r["method"], r["outcome"]) for r in audit.records] == [("tools/call", "ok")]
    record = audit.records[0]
    assert record["arguments"] == {"text": "hi [REDACTED:email]"}
    assert record["arguments_hmac"] == audit.digest(CALL["arguments"])


async def test_arguments_are_validated_after_the_cheap_checks() -> None:
    downstream = Downstream()
    middleware, _ = chain(downstream)
    with pytest.raises(MCPError) as invalid:
        await run(
            middleware, downstream, ctx("tools/call", {"name": "echo", "arguments": {"text": 5}})
        )
    assert invalid.value.code == -32602
    assert downstream.handled == []


async def test_a_request_the_door_charged_is_not_charged_again() -> None:
    downstream = Downstream()
    middleware, _ = chain(downstream, rate_limit_per_principal={"rate_per_s": 0.001, "burst": 1})
    for _ in range(3):  # over HTTP the rate gate already spent these requests' tokens
        await run(middleware, downstream, ctx("ping", raybus_rate_charged=True))
    await run(middleware, downstream, ctx("ping"))
    with pytest.raises(MCPError):
        await run(middleware, downstream, ctx("ping"))


async def test_a_tool_call_without_the_tools_scope_is_refused_by_the_chain_too() -> None:
    # WebSocket messages pass no HTTP door: the chain checks a token's tool scopes itself.
    oauth = {
        "issuer": "https://idp.example/realms/mcp",
        "audience": "http://127.0.0.1:8765/mcp",
        "tool_scopes": {"echo": ["tools.echo"]},
    }
    downstream = Downstream()
    middleware, audit = chain(downstream, oauth=oauth)
    lacking = TokenPrincipal("bob", "bob-sub", "agent", frozenset({"mcp"}))
    holding = TokenPrincipal("bob", "bob-sub", "agent", frozenset({"mcp", "tools.echo"}))
    with pytest.raises(MCPError) as refused:
        await run(middleware, downstream, ctx("tools/call", CALL, raybus_oauth_principal=lacking))
    await run(middleware, downstream, ctx("tools/call", CALL, raybus_oauth_principal=holding))
    assert refused.value.error.code == BusErrorCode.FORBIDDEN
    assert refused.value.error.message == "tool 'echo' needs scope tools.echo"
    assert downstream.handled == ["tools/call"]
    assert audit.flush()
    records = list(audit.records)
    assert [(r["client_id"], r["subject"], r["scopes"]) for r in records] == [
        ("agent", "bob-sub", ["mcp"]),
        ("agent", "bob-sub", ["mcp", "tools.echo"]),
    ]
