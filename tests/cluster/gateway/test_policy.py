"""The policy chain in front of the bus, exercised by real MCP clients over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import mcp
import pytest
import pytest_asyncio
from mcp.client.streamable_http import streamable_http_client

from cluster.gateway.policy.tokens import hash_token
from tests.cluster.bus_helpers import bus_config, running_gateway
from tests.waiting import wait_until
from transports.errors import BusErrorCode

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module")]

ALICE, BOB = "alice-secret-token-0123456789", "bob-secret-token-9876543210"
CAROL = "carol-secret-token-5555555555"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(
    ray_session: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, Path]]:
    audit = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    policy = {
        "tokens": [
            {"principal": "alice", "sha256": hash_token(ALICE)},
            {"principal": "bob", "sha256": hash_token(BOB)},
            {"principal": "carol", "sha256": hash_token(CAROL)},
        ],
        "allow": {
            "alice": ["echo", "dump_request", "count_with_progress"],
            "bob": ["echo"],
            "carol": ["resource:testkit://greeting", "prompt:summarize"],
        },
        "rate_limit_per_tool": {"count_with_progress": {"rate_per_s": 0.01, "burst": 2}},
        "audit_path": str(audit),
        "redact_results": True,
    }
    config = bus_config(
        [{"name": "kit", "server": "cluster.examples.testkit:server", "min_workers": 1}],
        gateway={"policy": policy},
    )
    async with running_gateway(config) as url:
        yield url, audit


def client_for(url: str, token: str) -> mcp.Client:
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    return mcp.Client(streamable_http_client(url, http_client=http), mode="legacy")


async def test_a_missing_or_wrong_token_gets_401_with_a_challenge(
    gateway: tuple[str, Path],
) -> None:
    url, _ = gateway
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient() as http:
        missing = await http.post(url, json=body, headers=headers)
        wrong = await http.post(url, json=body, headers={**headers, "Authorization": "Bearer nope"})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]


async def test_allow_lists_filter_the_list_and_refuse_other_tools(
    gateway: tuple[str, Path],
) -> None:
    url, _ = gateway
    async with client_for(url, BOB) as bob:
        assert [t.name for t in (await bob.list_tools()).tools] == ["echo"]
        assert (await bob.call_tool("echo", {"text": "ok"})).structured_content == {"result": "ok"}
        with pytest.raises(mcp.MCPError) as refused:
            await bob.call_tool("dump_request", {})
    assert refused.value.code == BusErrorCode.FORBIDDEN


async def test_rate_limits_refuse_with_a_retry_hint_and_spare_other_clients(
    gateway: tuple[str, Path],
) -> None:
    url, _ = gateway
    async with client_for(url, ALICE) as alice:
        for _ in range(2):
            await alice.call_tool("count_with_progress", {"steps": 1})
        with pytest.raises(mcp.MCPError) as limited:
            await alice.call_tool("count_with_progress", {"steps": 1})
        assert limited.value.code == BusErrorCode.RATE_LIMITED
        assert limited.value.data["retryAfterSeconds"] > 0
        assert (await alice.call_tool("echo", {"text": "still fine"})).structured_content == {
            "result": "still fine"
        }


async def test_arguments_are_validated_against_the_schema_before_dispatch(
    gateway: tuple[str, Path],
) -> None:
    url, _ = gateway
    async with client_for(url, BOB) as bob:
        with pytest.raises(mcp.MCPError) as invalid:
            await bob.call_tool("echo", {"text": 5})
    assert invalid.value.code == -32602
    assert "text" in invalid.value.message


async def test_the_client_token_reaches_no_worker_and_results_are_redacted(
    gateway: tuple[str, Path],
) -> None:
    url, _ = gateway
    async with client_for(url, ALICE) as alice:
        dumped = await alice.call_tool("dump_request", {})
        echoed = await alice.call_tool("echo", {"text": "mail me at carol@example.com"})
    text = dumped.content[0].text  # type: ignore[union-attr]
    assert ALICE not in text
    assert hash_token(ALICE) not in text
    assert "authorization" not in text.lower()
    assert echoed.structured_content == {"result": "mail me at [REDACTED:email]"}


async def test_every_request_writes_exactly_one_redacted_audit_record(
    gateway: tuple[str, Path],
) -> None:
    url, audit = gateway
    # Records are written off the event loop, in batches: an earlier test's may still
    # land after this one starts, so this test's records are told apart by their time.
    started = time.time()
    async with client_for(url, BOB) as bob:
        await bob.call_tool("echo", {"text": "card 4111 1111 1111 1111"})
        with pytest.raises(mcp.MCPError):
            await bob.call_tool("dump_request", {})

    def ours() -> list[dict[str, Any]]:
        return [r for r in _lines(audit) if r["time"] >= started]

    await wait_until(lambda: any(r["tool"] == "dump_request" for r in ours()))
    records = ours()
    calls = [r for r in records if r["method"] == "tools/call"]
    assert [(r["tool"], r["outcome"]) for r in calls] == [
        ("echo", "ok"),
        ("dump_request", f"error {BusErrorCode.FORBIDDEN}"),
    ]
    assert all(r["principal"] == "bob" for r in records)
    assert calls[0]["arguments"] == {"text": "card [REDACTED:card]"}
    assert "arguments_sha256" not in calls[0]  # an unkeyed digest lets guesses be confirmed
    # The whole number, not "4111": that also occurs inside a record's timestamp.
    assert "4111 1111 1111 1111" not in audit.read_text()
    assert len({r["method"] for r in records}) >= 2  # initialize and tools/list are audited too


def _lines(audit: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []


async def test_an_allow_list_covers_resources_and_prompts_too(gateway: tuple[str, Path]) -> None:
    url, _ = gateway
    async with client_for(url, BOB) as bob:
        assert (await bob.list_resources()).resources == []
        assert (await bob.list_prompts()).prompts == []
        with pytest.raises(mcp.MCPError) as read:
            await bob.read_resource("testkit://greeting")
        with pytest.raises(mcp.MCPError) as got:
            await bob.get_prompt("summarize", {"topic": "x"})
    assert (read.value.code, got.value.code) == (BusErrorCode.FORBIDDEN, BusErrorCode.FORBIDDEN)
    async with client_for(url, CAROL) as carol:
        assert [str(r.uri) for r in (await carol.list_resources()).resources] == [
            "testkit://greeting"
        ]
        assert (await carol.read_resource("testkit://greeting")).contents
        assert (await carol.get_prompt("summarize", {"topic": "x"})).messages
        assert (await carol.list_tools()).tools == []


async def test_the_websocket_serves_the_token_principal_and_refuses_foreign_origins(
    gateway: tuple[str, Path],
) -> None:
    import websockets

    url, _ = gateway
    ws_url = url.replace("http://", "ws://").replace("/mcp", "/ws")
    auth = {"Authorization": f"Bearer {BOB}"}
    async with asyncio.timeout(30), websockets.connect(ws_url, additional_headers=auth) as ws:
        for message in (
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "ws", "version": "1"},
                },
            },
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": CALL_ECHO},
        ):
            await ws.send(json.dumps(message))
        answer: dict[str, Any] = {}
        while answer.get("id") != 2:
            answer = json.loads(await ws.recv())
    # As "anonymous" (before) the allow-list refused the call.
    assert answer["result"]["structuredContent"] == {"result": "ws"}
    for origin in ("http://evil.example", "null"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with (
                asyncio.timeout(30),
                websockets.connect(ws_url, additional_headers={**auth, "Origin": origin}),
            ):
                pass
        assert refused.value.response.status_code == 403


CALL_ECHO = {"name": "echo", "arguments": {"text": "ws"}}


@pytest.mark.parametrize(
    "arguments",
    [b'{"text": NaN}', b'{"text": 1e999}', b'{"text": "a", "text": "b"}'],
)
async def test_values_the_bus_cannot_carry_are_parse_errors_at_the_http_front(
    gateway: tuple[str, Path], arguments: bytes
) -> None:
    url, _ = gateway
    body = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":'
    headers = {
        "Authorization": f"Bearer {BOB}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(url, content=body + arguments + b"}}", headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32700


async def test_requests_refused_at_the_door_are_audited(gateway: tuple[str, Path]) -> None:
    url, audit = gateway
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with httpx.AsyncClient() as http:
        await http.post(url, json=body, headers={"Host": "evil.example"})
        await http.post(url, json=body, headers={"Authorization": "Bearer wrong"})
    wanted = {"refused 403 host_or_origin", "refused 401 invalid_token"}
    await wait_until(lambda: wanted <= {r["outcome"] for r in _lines(audit)})


async def test_a_stateless_era_tool_call_leaves_one_record_and_no_tools_list(
    gateway: tuple[str, Path],
) -> None:
    url, audit = gateway
    started = time.time()  # an earlier test's records may land later: told apart by time
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {ALICE}"})
    async with mcp.Client(streamable_http_client(url, http_client=http)) as alice:
        for n in range(3):
            await alice.call_tool("echo", {"text": f"call {n}"})

    def mine() -> list[dict[str, Any]]:
        return [r for r in _lines(audit) if r["time"] >= started and r["principal"] == "alice"]

    await wait_until(lambda: any(r.get("arguments") == {"text": "call 2"} for r in mine()))
    records = mine()
    assert len([r for r in records if r["method"] == "tools/call"]) == 3
    # The SDK used to list tools through the policy chain for every call (to check
    # Mcp-Param headers): one record each. Only the client's own listing remains (the
    # SDK client fetches output schemas once).
    assert len([r for r in records if r["method"] == "tools/list"]) <= 1
