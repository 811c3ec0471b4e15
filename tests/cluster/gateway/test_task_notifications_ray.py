"""Pushed task status notifications through ``raybus up``'s gateway on a real local Ray
bus: the task store actor's change feed, the gateway's watcher, both eras' streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import pytest
import pytest_asyncio

from tests.cluster.bus_helpers import bus_config, running_gateway
from tests.cluster.gateway.test_task_notifications import (
    ALICE,
    BOB,
    TOKENS,
    frames,
    headers,
    legacy_session,
    listen_body,
    new_task,
)
from tests.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module")]

# Bounds for a cold, loaded 2-core machine: they stop a hang, they measure nothing.
_OUTCOME_S = 120.0
JOB = {"seconds": 2, "step_s": 1}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def url(ray_session: None) -> AsyncIterator[str]:
    pool = {
        "name": "jobs",
        "server": "cluster.examples.tasks_fixture:server",
        "min_workers": 1,
        "tasks": {"tools": {"long_job": "optional"}, "run_timeout_s": 600},
    }
    async with running_gateway(bus_config([pool], gateway={"policy": TOKENS})) as served:
        yield served


async def test_both_eras_hear_their_tasks_end_through_the_bus(url: str) -> None:
    async with legacy_session(url, ALICE) as alice:
        legacy = await alice.create_task("", "long_job", meta={"progressToken": "p-1"}, **JOB)
        modern = await new_task(url, ALICE, "", "long_job", **JOB)
        seen: list[dict[str, Any]] = []
        async with (
            httpx.AsyncClient(timeout=_OUTCOME_S) as http,
            http.stream("POST", url, json=listen_body([modern]), headers=headers(ALICE)) as listen,
        ):
            stream = frames(listen)
            ack = await anext(stream)
            assert ack["params"]["notifications"]["taskIds"] == [modern]
            while not seen or seen[-1]["params"]["status"] != "completed":
                seen.append(await anext(stream))
        await wait_until(lambda: bool(statuses(alice.heard)), _OUTCOME_S)
    assert {m["params"]["taskId"] for m in seen} == {modern}
    assert seen[-1]["params"]["result"]["content"][0]["text"] == "done after 2 steps"
    assert [(m["params"]["taskId"], m["params"]["status"]) for m in statuses(alice.heard)] == [
        (legacy, "completed")
    ]
    # Its progress under the creating request's token, before its end (the feed keeps a
    # task's latest change: steps read together arrive as the last of them).
    told = [m["params"] for m in alice.heard if m["method"] == "notifications/progress"]
    assert told, alice.heard
    assert {(p["progressToken"], p["total"]) for p in told} == {("p-1", 2)}
    values = [p["progress"] for p in told]
    assert values == sorted(set(values)), values
    assert alice.heard[-1]["method"] == "notifications/tasks/status"


def statuses(heard: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in heard if m["method"] == "notifications/tasks/status"]


async def test_a_listener_is_agreed_no_task_of_another_principal(url: str) -> None:
    alices = await new_task(url, ALICE, "", "long_job", **JOB)
    async with (
        httpx.AsyncClient(timeout=_OUTCOME_S) as http,
        http.stream("POST", url, json=listen_body([alices]), headers=headers(BOB)) as listen,
    ):
        ack = await anext(frames(listen))
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["notifications"]["taskIds"] == []
