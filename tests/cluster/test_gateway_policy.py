"""The policy chain in front of the bus, exercised by real MCP clients over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2 as httpx
import mcp
import pytest
import pytest_asyncio
from mcp.client.streamable_http import streamable_http_client

from cluster.gateway_policy import FORBIDDEN, RATE_LIMITED
from tests.actors.bus_helpers import bus_config, running_gateway
from transports.policy.tokens import hash_token

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module")]

ALICE, BOB = "alice-secret-token-0123456789", "bob-secret-token-9876543210"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(
    ray_session: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, Path]]:
    audit = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    policy = {
        "tokens": [
            {"principal": "alice", "sha256": hash_token(ALICE)},
            {"principal": "bob", "sha256": hash_token(BOB)},
        ],
        "allow": {"alice": ["echo", "dump_request", "count_with_progress"], "bob": ["echo"]},
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
    assert refused.value.code == FORBIDDEN


async def test_rate_limits_refuse_with_a_retry_hint_and_spare_other_clients(
    gateway: tuple[str, Path],
) -> None:
    url, _ = gateway
    async with client_for(url, ALICE) as alice:
        for _ in range(2):
            await alice.call_tool("count_with_progress", {"steps": 1})
        with pytest.raises(mcp.MCPError) as limited:
            await alice.call_tool("count_with_progress", {"steps": 1})
        assert limited.value.code == RATE_LIMITED
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
    before = len(audit.read_text().splitlines()) if audit.exists() else 0
    async with client_for(url, BOB) as bob:
        await bob.call_tool("echo", {"text": "card 4111 1111 1111 1111"})
        with pytest.raises(mcp.MCPError):
            await bob.call_tool("dump_request", {})
    records = [json.loads(line) for line in audit.read_text().splitlines()[before:]]
    calls = [r for r in records if r["method"] == "tools/call"]
    assert [(r["tool"], r["outcome"]) for r in calls] == [
        ("echo", "ok"),
        ("dump_request", f"error {FORBIDDEN}"),
    ]
    assert all(r["principal"] == "bob" for r in records)
    assert calls[0]["arguments"] == {"text": "card [REDACTED:card]"}
    assert "4111" not in audit.read_text()
    assert len({r["method"] for r in records}) >= 2  # initialize and tools/list are audited too
