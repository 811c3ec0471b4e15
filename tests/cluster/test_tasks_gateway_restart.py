"""A task outlives the gateway that created it (issue 21), on Ray and on Kafka.

A 20 s ``long_job`` is started as a task over HTTP in both protocol eras (a 2025-11-25
task-augmented ``tools/call`` by the official SDK client, a 2026-07-28 one with the
``io.modelcontextprotocol/tasks`` extension); then the gateway's replica process is
killed while the tool runs. ``raybus up``'s keeper replaces the replica on the same port,
and the same principal fetches the task's status and result from the new replica.

What the restart takes away is the 2025 client's session: its id now answers 404, and
the spec has the client start a new session (``basic/transports``, session management).
The task does not belong to that session: the store binds every task to the gateway
principal that created it (token or OAuth subject), so the re-initialized client, the
same principal, sees it; another principal still does not.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import mcp
import mcp_types as types
import pytest
import pytest_asyncio

from actors.tasks.model import RELATED_TASK_META
from cluster.config import BusConfig
from cluster.gateway.policy.tokens import hash_token
from tests.cluster.bus_helpers import bus_config, running_gateway, serving_replica_pid
from tests.cluster.gateway.task_requests import create_task, task_get, task_result
from tests.cluster.gateway.test_tasks_over_http import client_for, left, post_2026
from tests.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

ALICE, BOB = "alice-restart-token-0123456789", "bob-restart-token-9876543210"
LEGACY = "2025-11-25"
# Bounds for a cold, loaded 2-core machine: they stop a hang, they measure nothing. A
# replica is replaced at the keeper's next check (2 s), then imports the SDK and serves.
_OUTCOME_S = 180.0
_JOB = {"seconds": 20, "step_s": 1}
_DONE = "done after 20 steps"

BACKENDS = [
    pytest.param("ray", id="ray"),
    pytest.param("kafka", marks=pytest.mark.kafka, id="kafka"),
]


@pytest.fixture(scope="module", params=BACKENDS)
def config(request: pytest.FixtureRequest) -> BusConfig:
    backend: dict[str, Any] = {}
    if request.param == "kafka":  # the broker is started here, outside the event loop
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        backend = {"backend": "kafka", "kafka": {"bootstrap": bootstrap, "partitions": 2}}
    policy = {
        "tokens": [
            {"principal": "alice", "sha256": hash_token(ALICE)},
            {"principal": "bob", "sha256": hash_token(BOB)},
        ]
    }
    pool = {
        "name": "jobs",
        "server": "cluster.examples.tasks_fixture:server",
        "min_workers": 1,  # runs both jobs at once (max_concurrency 32)
        "tasks": {"tools": {"long_job": "optional"}, "run_timeout_s": 600},
    }
    return bus_config([pool], gateway={"policy": policy}, **backend)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def url(config: BusConfig, ray_session: None) -> AsyncIterator[str]:
    async with running_gateway(config, fixed_port=True) as served:
        yield served


def _headers(token: str, session: str | None = None) -> dict[str, str]:
    headers = {
        "authorization": f"Bearer {token}",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": LEGACY,
    }
    if session is not None:
        headers["mcp-session-id"] = session
    return headers


async def _legacy_session(http: httpx.AsyncClient, url: str, token: str) -> str:
    """A 2025-11-25 session opened by hand (its id is what a restart takes away)."""
    params = {
        "protocolVersion": LEGACY,
        "capabilities": {},
        "clientInfo": {"name": "restart-test", "version": "1"},
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}
    opened = await http.post(url, json=body, headers=_headers(token))
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    sent = await http.post(url, json=initialized, headers=_headers(token, session))
    assert sent.status_code == 202, sent.text
    return session


async def _get_in_session(
    http: httpx.AsyncClient, url: str, token: str, session: str, task_id: str
) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 2, "method": "tasks/get", "params": {"taskId": task_id}}
    return await http.post(url, json=body, headers=_headers(token, session))


async def _replaced(bus: str, dead_pid: int, url: str) -> int:
    """Wait (bounded) until another replica than ``dead_pid`` answers HTTP on ``url``."""
    async with asyncio.timeout(_OUTCOME_S):
        # The condition is Ray's actor table, which sets no event of ours.
        while (pid := await serving_replica_pid(bus)) in (None, dead_pid):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                try:
                    await http.get(url)  # any HTTP answer: the replica serves
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.2)  # uvicorn is still starting
    assert pid is not None
    return pid


async def _modern_outcome(url: str, task_id: str) -> dict[str, Any]:
    """Poll a 2026-07-28 task with ``tasks/get`` (that era has no ``tasks/result``)."""
    async with asyncio.timeout(_OUTCOME_S):
        while True:
            answer = await post_2026(url, ALICE, "tasks/get", {"taskId": task_id})
            view: dict[str, Any] = answer["result"]
            if view["status"] != "working":
                return view
            await asyncio.sleep(view.get("pollIntervalMs", 1000) / 1000)  # as asked


async def test_a_task_started_before_the_gateway_restarts_is_answered_after_it(
    config: BusConfig, url: str, tmp_path: Path
) -> None:
    legacy_job, modern_job = tmp_path / "legacy", tmp_path / "modern"
    async with client_for(url, ALICE) as alice:
        created = await create_task(alice, "long_job", {**_JOB, "marker": str(legacy_job)})
    assert created.task.status == "working"
    assert not left(legacy_job, "finished")  # answered while the tool runs
    legacy_id = created.task.task_id
    modern = await post_2026(
        url,
        ALICE,
        "tools/call",
        {"name": "long_job", "arguments": {**_JOB, "marker": str(modern_job)}},
    )
    assert modern["result"]["resultType"] == "task"
    modern_id = modern["result"]["taskId"]
    async with httpx.AsyncClient(timeout=_OUTCOME_S) as http:
        session = await _legacy_session(http, url, ALICE)
        seen = await _get_in_session(http, url, ALICE, session, legacy_id)
        assert seen.status_code == 200, seen.text
        await wait_until(lambda: left(legacy_job, "pid") and left(modern_job, "pid"), _OUTCOME_S)

        before = await serving_replica_pid(config.name)
        assert before is not None
        os.kill(before, signal.SIGKILL)  # the gateway crashes while both tools run
        after = await _replaced(config.name, before, url)
        assert after != before

        # The session died with the replica: its id is unknown now (the client must
        # initialize again), which is what the SDK client below does.
        gone = await _get_in_session(http, url, ALICE, session, legacy_id)
        assert gone.status_code == 404, gone.text

    async with client_for(url, ALICE) as alice, client_for(url, BOB) as bob:
        assert (await task_get(alice, legacy_id)).status in ("working", "completed")
        result = await task_result(alice, legacy_id)  # blocks until the tool ends
        assert isinstance(result.content[0], types.TextContent)
        assert result.content[0].text == _DONE
        assert result.meta is not None
        assert result.meta[RELATED_TASK_META] == {"taskId": legacy_id}
        assert (await task_get(alice, legacy_id)).status == "completed"
        with pytest.raises(mcp.MCPError) as foreign:
            await task_get(bob, legacy_id)
        assert foreign.value.code == -32602  # still alice's alone
    assert left(legacy_job, "finished")

    outcome = await _modern_outcome(url, modern_id)
    assert outcome["status"] == "completed"
    assert outcome["result"]["content"] == [{"type": "text", "text": _DONE}]
    assert left(modern_job, "finished")
