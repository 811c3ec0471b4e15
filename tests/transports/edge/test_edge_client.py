"""The edge client against a real local HTTP endpoint that can be cut and restored."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.transports.edge.cuttable_server import Behaviour, CuttableServer
from transports.edge import EdgeClient, EdgeSettings, LinkState
from transports.edge.journal import Journal, RowState
from transports.errors import INTERNAL_ERROR, INVALID_PARAMS, BusErrorCode, BusTimeout, CallError

# Bounds for a cold, loaded 2-core machine: they stop a hang, they measure nothing.
_LINK_S = 30.0
_ALL_S = 120.0
# Short backoff so a restored link is found again quickly; the schedule is tested apart.
FAST = EdgeSettings(backoff_first_s=0.05, backoff_max_s=0.5)


@pytest_asyncio.fixture
async def server() -> AsyncIterator[CuttableServer]:
    served = CuttableServer()
    await served.restore()
    yield served
    if served._server is not None:
        await served.cut()


def answer(result: dict[str, Any]) -> str:
    return str(result["structuredContent"]["result"])


async def link(edge: EdgeClient, state: LinkState) -> None:
    async with asyncio.timeout(_LINK_S):
        await edge.wait_for_link(state)


async def test_500_calls_queued_while_the_link_is_down_are_each_answered_to_their_caller(
    server: CuttableServer, tmp_path: Path
) -> None:
    async with EdgeClient.open(tmp_path / "edge.db", url=server.url, settings=FAST) as edge:
        await link(edge, LinkState.UP)
        await server.cut()
        keys = [f"k{i:03d}" for i in range(500)]
        calls = await asyncio.gather(*(edge.submit("append", {"key": k}) for k in keys))
        await link(edge, LinkState.DOWN)
        assert edge.link.unanswered == 500
        assert server.runs == []
        await server.restore()
        async with asyncio.timeout(_ALL_S):
            results = await asyncio.gather(*(call.result() for call in calls))
        assert [answer(r) for r in results] == keys  # each caller got its own answer
        assert sorted(server.runs) == keys  # each ran exactly once
        assert edge.link.unanswered == 0
        assert edge.link.state == LinkState.UP


async def test_a_request_whose_answer_was_lost_is_resent_with_the_same_key(
    tmp_path: Path,
) -> None:
    server = CuttableServer(Behaviour(fail_after_run={"lost"}))
    await server.restore()
    try:
        async with EdgeClient.open(tmp_path / "edge.db", url=server.url, settings=FAST) as edge:
            result = await edge.call_tool("append", {"key": "lost"}, timeout_s=_ALL_S)
        assert answer(result) == "lost"
        attempts = [seen for seen in server.calls if seen.key == "lost"]
        assert len(attempts) == 2  # the first answer was lost: an HTTP 500
        assert attempts[0].idempotency_key == attempts[1].idempotency_key
        assert attempts[0].body["id"] == attempts[1].body["id"]
        assert server.runs == ["lost"]  # the server's dedup ran it once
    finally:
        await server.cut()


async def test_a_transient_refusal_is_resent_and_a_final_error_reaches_the_caller(
    tmp_path: Path,
) -> None:
    refusals = {"busy": int(BusErrorCode.OVERLOADED), "bad": INVALID_PARAMS}
    server = CuttableServer(Behaviour(refuse_once=refusals))
    await server.restore()
    try:
        async with EdgeClient.open(tmp_path / "edge.db", url=server.url, settings=FAST) as edge:
            busy = await edge.submit("append", {"key": "busy"})
            bad = await edge.submit("append", {"key": "bad"})
            assert answer(await busy.result(_ALL_S)) == "busy"
            with pytest.raises(CallError) as refused:
                await bad.result(_ALL_S)
        assert refused.value.code == INVALID_PARAMS
        assert server.runs == ["busy"]
        assert [s.key for s in server.calls].count("busy") == 2
    finally:
        await server.cut()


async def test_an_answer_past_max_answer_bytes_fails_its_call_and_is_not_resent(
    server: CuttableServer, tmp_path: Path
) -> None:
    settings = FAST.model_copy(update={"max_answer_bytes": 1024})
    async with EdgeClient.open(tmp_path / "edge.db", url=server.url, settings=settings) as edge:
        big = await edge.submit("append", {"key": "x" * 4096})  # echoed in its answer
        small = await edge.submit("append", {"key": "small"})
        with pytest.raises(CallError) as refused:
            await big.result(_ALL_S)
        assert answer(await small.result(_ALL_S)) == "small"
    assert refused.value.code == INTERNAL_ERROR
    assert "larger than max_answer_bytes (1024)" in refused.value.message
    assert sorted(server.runs) == sorted(["x" * 4096, "small"])  # ran once, never resent


async def test_each_request_carries_the_era_headers_its_key_and_labels(
    server: CuttableServer, tmp_path: Path
) -> None:
    async with EdgeClient.open(
        tmp_path / "edge.db", url=server.url, labels={"region": "eu"}, settings=FAST
    ) as edge:
        call = await edge.submit("append", {"key": "a"}, idempotency_key="order-7")
        await call.result(_ALL_S)
        client_id = edge.client_id
    (seen,) = server.calls
    meta = seen.body["params"]["_meta"]
    assert meta["io.raybus/idempotency-key"] == f"{client_id}:order-7"
    assert meta["io.raybus/labels"] == {"region": "eu"}
    assert seen.body["id"] == call.request_id
    assert seen.headers["mcp-method"] == "tools/call"
    assert seen.headers["mcp-name"] == "append"
    assert seen.headers["mcp-protocol-version"] == "2026-07-28"
    assert "authorization" not in seen.headers


async def test_with_one_in_flight_the_bus_sees_calls_in_submit_order(
    server: CuttableServer, tmp_path: Path
) -> None:
    settings = EdgeSettings(max_in_flight=1, backoff_first_s=0.05, backoff_max_s=0.5)
    async with EdgeClient.open(tmp_path / "edge.db", url=server.url, settings=settings) as edge:
        await link(edge, LinkState.UP)
        await server.cut()
        calls = [await edge.submit("append", {"key": f"k{i:02d}"}) for i in range(40)]
        await link(edge, LinkState.DOWN)
        await server.restore()
        async with asyncio.timeout(_ALL_S):
            await asyncio.gather(*(c.result() for c in calls))
    assert server.runs == [f"k{i:02d}" for i in range(40)]


async def test_a_refused_token_pauses_the_link_and_touches_no_request(tmp_path: Path) -> None:
    server = CuttableServer(Behaviour(token="right-token"))
    await server.restore()
    path = tmp_path / "edge.db"
    try:
        async with EdgeClient.open(path, url=server.url, token="wrong", settings=FAST) as edge:
            await link(edge, LinkState.AUTH_FAILED)
            call = await edge.submit("append", {"key": "a"})
            with pytest.raises(BusTimeout):  # it never goes: the token is refused
                await call.result(timeout_s=0.5)
        assert server.runs == []
        journal = await Journal.open(path)
        try:
            row = await journal.get(call.request_id)
            assert row is not None
            assert row.state == RowState.QUEUED
        finally:
            await journal.close()
        async with EdgeClient.open(
            path, url=server.url, token="right-token", settings=FAST
        ) as edge:
            late = await edge.attach(call.request_id)
            assert answer(await late.result(_ALL_S)) == "a"
    finally:
        await server.cut()


async def test_answers_outlive_the_process_that_asked(
    server: CuttableServer, tmp_path: Path
) -> None:
    path = tmp_path / "edge.db"
    await server.cut()
    async with EdgeClient.open(path, url=server.url, settings=FAST) as edge:
        ids = [(await edge.submit("append", {"key": f"k{i}"})).request_id for i in range(20)]
        kept = ids[0]
    await server.restore()
    async with EdgeClient.open(path, url=server.url, settings=FAST) as edge:
        seen: dict[str, str] = {}
        async with asyncio.timeout(_ALL_S):
            async for outcome in edge.unclaimed(follow=True):
                assert outcome.result is not None
                seen[outcome.request_id] = answer(outcome.result)
                if outcome.request_id != kept:
                    await outcome.claim()
                if len(seen) == 20:
                    break
        assert seen == {rid: f"k{i}" for i, rid in enumerate(ids)}
        attached = await edge.attach(kept)
        assert answer(await attached.result()) == "k0"
        assert [o async for o in edge.unclaimed()] == []
    assert sorted(server.runs) == sorted(f"k{i}" for i in range(20))


async def test_a_queued_call_can_be_cancelled_until_it_leaves(
    server: CuttableServer, tmp_path: Path
) -> None:
    await server.cut()
    async with EdgeClient.open(tmp_path / "edge.db", url=server.url, settings=FAST) as edge:
        call = await edge.submit("append", {"key": "never"})
        assert await call.cancel()
        with pytest.raises(CallError) as cancelled:
            await call.result(_ALL_S)
        assert cancelled.value.code == BusErrorCode.CANCELLED
        await server.restore()
        assert answer(await edge.call_tool("append", {"key": "after"}, timeout_s=_ALL_S)) == (
            "after"
        )
    assert server.runs == ["after"]


def test_bad_settings_and_keys_are_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        EdgeSettings(max_in_flight=0)
    with pytest.raises(ValueError, match="region"):
        EdgeClient.open(tmp_path / "edge.db", url="http://127.0.0.1:1/mcp", labels={"region": "EU"})


def test_the_edge_package_imports_neither_ray_nor_the_mcp_sdk() -> None:
    probe = (
        "import sys, transports.edge; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mcp', 'mcp_types')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert loaded.stdout.strip() == "[]"


async def test_the_resend_horizon_ends_300_s_before_the_bus_forgets_a_key(
    tmp_path: Path,
) -> None:
    server = CuttableServer(Behaviour(ttl_s=900))
    await server.restore()
    path = tmp_path / "edge.db"
    try:
        async with EdgeClient.open(path, url=server.url, settings=FAST) as edge:
            await link(edge, LinkState.UP)
            assert edge._pump._horizon_s == 600
        journal = await Journal.open(path)
        try:
            assert await journal.meta("bus_idempotency_ttl_s") == "900.0"  # kept for restarts
        finally:
            await journal.close()
    finally:
        await server.cut()
