"""Long-running tools as tasks on a real local Ray (issue 21, Python client side).

One bus serves the module. The fixture tool ``long_job`` leaves marker files (its pid at
start, ``finished`` or ``cancelled`` at the end), so the tests see what happened inside
the worker without reaching into it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import ray

from cluster.bus import bus_status
from cluster.client import BusClient, CallError
from cluster.naming import actor_names, get_actor_async
from cluster.tasks.handle import Progress, TaskStatus
from cluster.tasks.journals import GcsKvJournal
from cluster.tasks.remote import RemoteTaskStore
from tests.cluster.bus_helpers import bus_config, running_bus
from tests.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module")]

# Bounds for a cold, loaded 2-core machine: they stop a hang, they measure nothing.
_OUTCOME_S = 120.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bus(ray_session: None) -> AsyncIterator[BusClient]:
    config = bus_config(
        [
            {
                "name": "jobs",
                "server": "cluster.examples.tasks_fixture:server",
                "min_workers": 2,
                "max_sync_s": 2,
                "tasks": {
                    "tools": {"long_job": "optional", "report": "required", "confirm": "optional"},
                    "run_timeout_s": 600,
                },
            },
            {  # the same tools, named again_*, whose lost tasks run again
                "name": "again",
                "server": "cluster.examples.tasks_fixture:server",
                "namespace": "again",
                "min_workers": 2,
                "tasks": {"tools": {"*": "optional"}, "rerun_lost": "always", "max_attempts": 2},
            },
        ]
    )
    async with running_bus(config) as client:
        yield client


def marker(tmp_path: Path, name: str) -> str:
    return str(tmp_path / name)


def left(job: str, suffix: str) -> bool:
    """Did the fixture tool leave ``<job>.<suffix>``?"""
    return Path(f"{job}.{suffix}").exists()


def pid_of(job: str) -> int:
    return int(Path(f"{job}.pid").read_text(encoding="utf-8"))


async def test_a_task_starts_reports_progress_and_its_result_outlives_the_client(
    bus: BusClient, tmp_path: Path
) -> None:
    first = await BusClient.connect(bus.bus)
    job = marker(tmp_path, "job")
    handle = await first.start_tool("long_job", {"seconds": 6, "step_s": 1, "marker": job})
    started = await handle.status()
    assert started.status is TaskStatus.WORKING
    assert not left(job, "finished")  # start returned while the tool runs
    seen: list[Progress] = []
    async for step in handle.progress():
        seen.append(step)
        if len(seen) == 2:
            break
    assert [s.total for s in seen] == [6.0, 6.0]
    assert seen[0].progress < seen[1].progress
    task_id = handle.id
    await first.close()
    # Another process (a driver of its own) re-opens it by id and waits for it too.
    reader = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.cluster.task_reader",
        ray.get_runtime_context().gcs_address,
        bus.bus,
        task_id,
        str(_OUTCOME_S),
        stdout=asyncio.subprocess.PIPE,
    )
    second = await BusClient.connect(bus.bus)
    try:
        reopened = await second.open_task(task_id)
        result = await reopened.result(timeout_s=_OUTCOME_S)
        assert result.content[0].text == "done after 6 steps"  # type: ignore[union-attr]
        assert (await reopened.status()).status is TaskStatus.COMPLETED
        async with asyncio.timeout(_OUTCOME_S):
            printed, _ = await reader.communicate()
        assert reader.returncode == 0
        outcome = json.loads(printed.decode().strip().splitlines()[-1])
        assert outcome == {"status": "completed", "text": "done after 6 steps"}
    finally:
        if reader.returncode is None:
            reader.kill()
            await reader.wait()
        await second.close()


async def test_progress_ends_with_the_task(bus: BusClient, tmp_path: Path) -> None:
    handle = await bus.start_tool("long_job", {"seconds": 3, "step_s": 1})
    steps = [step.progress async for step in handle.progress()]
    assert len(steps) >= 2
    assert steps == sorted(steps)
    assert (await handle.status()).status is TaskStatus.COMPLETED


async def test_cancel_stops_the_tool_on_its_worker(bus: BusClient, tmp_path: Path) -> None:
    job = marker(tmp_path, "cancelled-job")
    handle = await bus.start_tool("long_job", {"seconds": 300, "step_s": 1, "marker": job})
    await wait_until(lambda: left(job, "pid"), _OUTCOME_S)
    after = await handle.cancel()
    assert after.status is TaskStatus.CANCELLED
    await wait_until(lambda: left(job, "cancelled"), _OUTCOME_S)
    with pytest.raises(CallError) as caught:
        await handle.result(timeout_s=_OUTCOME_S)
    assert caught.value.code == 1005
    assert (await handle.cancel()).status is TaskStatus.CANCELLED  # idempotent
    assert not left(job, "finished")


async def test_a_tool_without_task_opt_in_runs_synchronously_only(bus: BusClient) -> None:
    assert (await bus.call_tool("quick", {"text": "hi"})).content[0].text == "HI"  # type: ignore[union-attr]
    with pytest.raises(CallError) as caught:
        await bus.start_tool("quick", {"text": "hi"})
    assert caught.value.code == -32601
    assert "tasks.tools" in caught.value.message
    with pytest.raises(CallError) as unknown:
        await bus.start_tool("no_such_tool", {})
    assert unknown.value.code == -32602


async def test_a_task_only_tool_is_refused_as_a_synchronous_call(bus: BusClient) -> None:
    with pytest.raises(CallError) as caught:
        await bus.call_tool("report", {"title": "q3"})
    assert caught.value.code == -32021
    assert "start_tool" in caught.value.message
    handle = await bus.start_tool("report", {"title": "q3"})
    result = await handle.result(timeout_s=_OUTCOME_S)
    assert result.content[0].text == "report 'q3' written"  # type: ignore[union-attr]


async def test_a_synchronous_call_past_max_sync_s_names_the_task_mode(bus: BusClient) -> None:
    with pytest.raises(CallError) as caught:
        await bus.call_tool("long_job", {"seconds": 60, "step_s": 1}, timeout_s=_OUTCOME_S)
    assert caught.value.code == 1001
    assert "max_sync_s" in caught.value.message
    assert "start_tool" in caught.value.message


async def test_bus_status_counts_tasks_by_status(bus: BusClient) -> None:
    handle = await bus.start_tool("long_job", {"seconds": 1, "step_s": 1})
    await handle.result(timeout_s=_OUTCOME_S)
    status = await bus_status(bus.bus)
    assert status["tasks"]["completed"] >= 1


async def test_another_principal_cannot_open_a_task(bus: BusClient) -> None:
    handle = await bus.start_tool("long_job", {"seconds": 1, "step_s": 1})
    other = bus.new_session(principal="mallory")
    with pytest.raises(CallError) as caught:
        await other.open_task(handle.id)
    assert caught.value.code == -32602
    await handle.result(timeout_s=_OUTCOME_S)


async def test_stopping_a_bus_deletes_its_task_records(ray_session: None) -> None:
    config = bus_config(
        [
            {
                "name": "jobs",
                "server": "cluster.examples.tasks_fixture:server",
                "tasks": {"tools": {"long_job": "optional"}},
            }
        ]
    )
    async with running_bus(config) as client:
        handle = await client.start_tool("long_job", {"seconds": 1, "step_s": 1})
        await handle.result(timeout_s=_OUTCOME_S)
        assert [r.task_id for r in await GcsKvJournal(config.name).load()] == [handle.id]
    assert await GcsKvJournal(config.name).load() == []


async def test_a_bus_without_task_pools_starts_its_store_only_when_first_asked(
    ray_session: None,
) -> None:
    # A store costs a process at start: a bus whose configuration runs no tool as a task
    # starts none, and the first start_tool starts it (a server may declare task
    # support itself), which then answers for the pool as for any other.
    config = bus_config([{"name": "plain", "server": "cluster.examples.tasks_fixture:server"}])
    store = actor_names.tasks(config.name)
    async with running_bus(config) as client:
        assert store not in _live_actor_names()
        with pytest.raises(CallError) as caught:
            await client.start_tool("quick", {"text": "hi"})
        assert caught.value.code == -32601
        assert "tasks.tools" in caught.value.message
        assert store in _live_actor_names()
    await wait_until(lambda: store not in _live_actor_names(), timeout_s=_OUTCOME_S)


def _live_actor_names() -> set[str]:
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}


async def test_a_task_survives_a_restart_of_the_task_store(bus: BusClient, tmp_path: Path) -> None:
    job = marker(tmp_path, "store-restart")
    handle = await bus.start_tool("long_job", {"seconds": 8, "step_s": 1, "marker": job})
    await wait_until(lambda: left(job, "pid"), _OUTCOME_S)
    store = await get_actor_async(actor_names.tasks(bus.bus))
    before = await store.stats.remote()
    ray.kill(store, no_restart=False)  # Ray restarts it; the journal is in the GCS
    result = await handle.result(timeout_s=_OUTCOME_S)
    after = await store.stats.remote()
    assert after["pid"] != before["pid"]
    assert after["loaded"] >= 1
    assert result.content[0].text == "done after 8 steps"  # type: ignore[union-attr]
    reopened = await bus.open_task(handle.id)
    assert (await reopened.status()).status is TaskStatus.COMPLETED


async def test_a_task_whose_worker_dies_ends_failed_not_working(
    bus: BusClient, tmp_path: Path
) -> None:
    job = marker(tmp_path, "killed")
    handle = await bus.start_tool("long_job", {"seconds": 300, "step_s": 1, "marker": job})
    await wait_until(lambda: left(job, "pid"), _OUTCOME_S)
    os.kill(pid_of(job), signal.SIGKILL)
    with pytest.raises(CallError) as caught:
        await handle.result(timeout_s=_OUTCOME_S)
    assert caught.value.code == 1004  # the tool may have run: not run again (not idempotent)
    assert (await handle.status()).status is TaskStatus.FAILED


async def test_a_task_whose_worker_dies_runs_again_when_its_pool_allows(
    bus: BusClient, tmp_path: Path
) -> None:
    job = marker(tmp_path, "rerun")
    handle = await bus.start_tool("again_long_job", {"seconds": 4, "step_s": 1, "marker": job})
    await wait_until(lambda: left(job, "pid"), _OUTCOME_S)
    first_pid = pid_of(job)
    os.kill(first_pid, signal.SIGKILL)
    result = await handle.result(timeout_s=_OUTCOME_S)
    assert result.content[0].text == "done after 4 steps"  # type: ignore[union-attr]
    state = await handle.status()
    assert state.attempt == 2
    assert pid_of(job) != first_pid


async def wait_for_a_new_store(store: Any, old_pid: int) -> None:
    async with asyncio.timeout(_OUTCOME_S):
        while True:
            try:
                if (await store.stats.remote())["pid"] != old_pid:
                    return
            except ray.exceptions.RayActorError:
                pass  # dying or restarting: ask again
            await asyncio.sleep(0.2)  # polling the restart: Ray has no event for it


async def test_a_tools_input_request_waits_in_the_store_through_its_restart(
    bus: BusClient,
) -> None:
    handle = await bus.start_tool("confirm", {"question": "Ship it?"}, answers_input=True)
    asked = await handle.input_requests(wait_s=_OUTCOME_S)
    assert list(asked) == ["input-1"]
    assert asked["input-1"]["method"] == "elicitation/create"
    assert asked["input-1"]["params"]["message"] == "Ship it?"
    assert (await handle.status()).status is TaskStatus.INPUT_REQUIRED
    store = await get_actor_async(actor_names.tasks(bus.bus))
    before = await store.stats.remote()
    ray.kill(store, no_restart=False)  # the parked request and its way back are journaled
    # The kill is asynchronous: answer the new incarnation, not the dying one (whose
    # reply, lost with it, would be asked again of the new one and found answered).
    await wait_for_a_new_store(store, before["pid"])
    outcome = await handle.respond({"input-1": {"action": "accept", "content": {"yes": True}}})
    assert (outcome.answered, outcome.ignored) == (("input-1",), ())
    result = await handle.result(timeout_s=_OUTCOME_S)
    assert (await store.stats.remote())["pid"] != before["pid"]
    assert result.content[0].text == "confirmed"  # type: ignore[union-attr]
    again = await handle.respond({"input-1": {"action": "accept", "content": {"yes": False}}})
    assert again.ignored == ("input-1",)


async def test_an_input_request_answered_with_an_error_reaches_the_tool_as_one(
    bus: BusClient,
) -> None:
    handle = await bus.start_tool("confirm", {"question": "Ship it?"}, answers_input=True)
    assert list(await handle.input_requests(wait_s=_OUTCOME_S)) == ["input-1"]
    outcome = await handle.respond_error("input-1", code=-32600, message="no human at hand")
    assert (outcome.answered, outcome.ignored) == (("input-1",), ())
    try:
        result = await handle.result(timeout_s=_OUTCOME_S)
    except CallError as exc:
        told = exc.message
    else:
        assert result.is_error
        told = result.content[0].text  # type: ignore[union-attr]
    assert "no human at hand" in told
    again = await handle.respond_error("input-1", code=-32600, message="late")
    assert again.ignored == ("input-1",)


async def test_the_stores_change_feed_tells_each_status_change_and_outlives_a_restart(
    bus: BusClient, tmp_path: Path
) -> None:
    # What a gateway replica's notification watcher reads (one long poll for every task).
    feed = RemoteTaskStore(bus.bus)
    cursor = (await feed.changes(None, 0)).cursor
    job = marker(tmp_path, "feed")
    handle = await bus.start_tool("long_job", {"seconds": 2, "step_s": 1, "marker": job})
    told: list[tuple[TaskStatus, float | None]] = []
    async with asyncio.timeout(_OUTCOME_S):
        while TaskStatus.COMPLETED not in {status for status, _ in told}:
            batch = await feed.changes(cursor, 30.0)
            cursor = batch.cursor
            told += [(r.status, r.progress) for r in batch.records if r.task_id == handle.id]
    # One status change; before it, only progress (for a 2025 creator's progressToken),
    # each read a record with its latest progress.
    *working, (status, _) = told
    assert status is TaskStatus.COMPLETED
    assert all(s is TaskStatus.WORKING and p is not None for s, p in working), told
    store = await get_actor_async(actor_names.tasks(bus.bus))
    before = await store.stats.remote()
    ray.kill(store, no_restart=False)
    await wait_for_a_new_store(store, before["pid"])
    # A cursor of the old incarnation reads everything the new one loaded.
    reborn = await feed.changes(cursor, 0)
    assert reborn.cursor.epoch != cursor.epoch
    loaded = {r.task_id: r.status for r in reborn.records}
    assert loaded[handle.id] is TaskStatus.COMPLETED


async def test_a_tools_input_request_is_refused_at_once_when_nobody_answers(
    bus: BusClient,
) -> None:
    handle = await bus.start_tool("confirm", {"question": "Ship it?"})
    try:
        result = await handle.result(timeout_s=_OUTCOME_S)
    except CallError as exc:
        told = exc.message
    else:
        assert result.is_error
        told = result.content[0].text  # type: ignore[union-attr]
    assert "has no caller to answer it" in told
    assert await handle.input_requests() == {}


async def test_a_task_whose_router_dies_holding_its_call_ends_failed_not_working(
    bus: BusClient, tmp_path: Path
) -> None:
    # Last in the module: the bus's router restarts under it.
    job = marker(tmp_path, "router")
    # Long enough to outlast a router restart on a loaded machine; short enough that the
    # call (which the new router does not know, so cannot cancel) ends before teardown.
    handle = await bus.start_tool("long_job", {"seconds": 90, "step_s": 1, "marker": job})
    await wait_until(lambda: left(job, "pid"), _OUTCOME_S)
    router = await get_actor_async(actor_names.router(bus.bus))
    ray.kill(router, no_restart=False)
    with pytest.raises(CallError) as caught:
        await handle.result(timeout_s=_OUTCOME_S)
    assert caught.value.code == 1004
    assert "router restarted" in caught.value.message
    # The call still runs on its worker, unknown to the new router (so nobody can cancel
    # it): end it here, or stopping the bus would wait out its drain for it.
    os.kill(pid_of(job), signal.SIGKILL)
