"""A remote MCP server as a pool, on a real local Ray.

The upstream is the official SDK serving :mod:`tests.cluster.remote_upstream` over
Streamable HTTP in a process of its own on 127.0.0.1; the pool names it by ``url:``
with a bearer token from the environment. One bus (and one upstream) serves the module.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx2 as httpx
import pytest
import pytest_asyncio

from cluster.bus import bus_status
from cluster.client import BusClient, CallError
from cluster.config import BusConfig
from cluster.gateway.policy.tokens import hash_token
from tests.cluster.bus_helpers import bus_config, running_bus, running_gateway
from tests.faults.gateway_clients import call_body, post
from tests.upstream_process import Upstream, running_upstream
from transports.errors import BusError, BusErrorCode

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module")]

TOKEN_VARIABLE = "RAYBUS_TEST_UPSTREAM_TOKEN"
UPSTREAM_TOKEN = f"upstream-{uuid.uuid4().hex}"
CALLER_TOKEN = f"caller-{uuid.uuid4().hex}"


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 60.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - the state lives in other actors
            await asyncio.sleep(0.05)  # polling the bus from outside


@pytest.fixture(scope="module")
def token_in_environment() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TOKEN_VARIABLE, UPSTREAM_TOKEN)
        yield


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def upstream() -> AsyncIterator[Upstream]:
    async with running_upstream() as running:
        yield running


@pytest.fixture(scope="module")
def config(upstream: Upstream, token_in_environment: None) -> BusConfig:
    pool = {
        "name": "remote",
        "url": upstream.url,
        "headers": {"Authorization": f"Bearer ${{{TOKEN_VARIABLE}}}"},
        # One worker: the test server announces a list change to the session that made
        # it only, and a pool's workers each hold a session of their own.
        "min_workers": 1,
        "max_workers": 1,
        "warm_spares": 0,
        "max_concurrency": 4,
    }
    policy = {"tokens": [{"principal": "alice", "sha256": hash_token(CALLER_TOKEN)}]}
    built = bus_config([pool], gateway={"policy": policy})
    os.environ.pop(TOKEN_VARIABLE)  # resolved once, here: the workers never read it
    return built


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bus(ray_session: None, config: BusConfig) -> AsyncIterator[BusClient]:
    async with running_bus(config) as client:
        yield client


async def test_a_remote_server_serves_its_tools_through_the_bus(bus: BusClient) -> None:
    assert {"echo", "nap", "grow", "headers_seen"} <= {t.name for t in await bus.list_tools()}
    calls = [("echo", {"text": f"call {n}"}) for n in range(40)]
    results = await bus.map_tool_calls(calls, concurrency=16)
    answers = [r if isinstance(r, BusError) else r.structured_content for r in results]
    assert answers == [{"result": f"call {n}"} for n in range(40)]


async def test_a_worker_runs_at_most_max_concurrency_calls_upstream(bus: BusClient) -> None:
    # 8 naps at once on one worker of max_concurrency 4: the rest wait in the router.
    calls = [("nap", {"seconds": 2.0}) for _ in range(8)]
    results = await bus.map_tool_calls(calls, concurrency=8)
    assert not [r for r in results if isinstance(r, BusError)]
    peak = (await bus.call_tool("peak_naps")).structured_content
    assert peak is not None
    assert 1 < peak["result"] <= 4  # calls overlap upstream, never more than 4


async def test_a_list_change_upstream_reaches_the_bus(bus: BusClient) -> None:
    name = f"shout_{uuid.uuid4().hex[:8]}"
    seen = await bus.list_changed_counters()
    before = seen.get("tool", 0)
    # A long poll with nothing changed answers after its wait, with the same counters.
    assert await bus.list_changed_counters(seen, wait_s=0.2) == seen
    # One under way when the list changes answers with the change (well before 60 s).
    waiting = asyncio.ensure_future(bus.list_changed_counters(seen, wait_s=60))
    added = await bus.call_tool("grow", {"name": name}, timeout_s=60)
    assert added.structured_content == {"result": f"added {name}"}
    changed = await asyncio.wait_for(waiting, timeout=55)
    assert changed.get("tool", 0) > before

    async def counted() -> bool:
        return (await bus.list_changed_counters()).get("tool", 0) > before

    async def listed() -> bool:
        return name in {t.name for t in await bus.list_tools()}

    await eventually(counted)
    await eventually(listed)


async def test_the_configured_headers_reach_upstream_and_the_callers_credentials_do_not(
    bus: BusClient, config: BusConfig
) -> None:
    async with running_gateway(config) as url, httpx.AsyncClient(timeout=60) as http:
        caller = {
            "authorization": f"Bearer {CALLER_TOKEN}",
            "x-caller": "smuggled",
            "x-upstream-key": "smuggled",
            "mcp-name": "headers_seen",
        }
        answer = await post(http, url, call_body("headers_seen", {}), caller)
        assert answer.status == 200, answer.body[:300]
        seen = answer.structured()["result"]
    assert seen, "the upstream saw no request"
    assert all(headers == {"authorization": f"Bearer {UPSTREAM_TOKEN}"} for headers in seen)


async def test_status_shows_no_header_value(bus: BusClient, config: BusConfig) -> None:
    shown = repr(await bus_status(config.name)) + repr(config)
    assert UPSTREAM_TOKEN not in shown


async def test_a_slow_upstream_call_ends_at_its_deadline(bus: BusClient) -> None:
    with pytest.raises(CallError) as caught:
        async with asyncio.timeout(60):
            await bus.call_tool("nap", {"seconds": 600}, timeout_s=1.0)
    assert caught.value.code == BusErrorCode.DEADLINE_EXCEEDED
