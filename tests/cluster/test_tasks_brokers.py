"""Tasks on Kafka and SQS (issue 21): the store is a broker client of its own.

The issue's three cases on each broker, with the fixture tool ``long_job`` (its marker
files show what happened inside the worker): a task starts, reports progress and its
result outlives the client that started it (and a restart of the store); a cancelled
task stops on its worker, even when the store that started it was restarted meanwhile;
a task whose worker dies ends failed, not "working".
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import ray

from cluster.client import BusClient, CallError
from cluster.naming import actor_names, get_actor_async
from cluster.tasks.handle import Progress, TaskStatus
from tests.cluster.bus_helpers import bus_config, running_bus
from tests.cluster.test_tasks_ray import left, marker, pid_of
from tests.faults.broker_bus import BROKERS, Broker, broker_of
from tests.waiting import wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

# Bounds for a cold, loaded 2-core machine: they stop a hang, they measure nothing.
# A dead worker's call is redelivered after the broker notices (Kafka: the session
# timeout and a rebalance; SQS: the visibility timeout), then the ledger answers 1004.
_OUTCOME_S = 180.0
# How long a redelivered call waits for the run the ledger says another worker holds,
# before answering 1004 "may have run" (default 60 s, most of the dead-worker case's
# time). Longer than any run a live worker holds here that a redelivery could meet (the
# 8 s job of the first test, were a rebalance to move its partition), so only a dead
# worker's run outlasts it.
_DUPLICATE_WAIT_S = 15.0


@pytest.fixture(scope="module", params=BROKERS)
def broker(request: pytest.FixtureRequest) -> Broker:
    return broker_of(request)  # started here, outside the event loop


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bus(broker: Broker, ray_session: None) -> AsyncIterator[BusClient]:
    pool = {
        "name": "jobs",
        "server": "cluster.examples.tasks_fixture:server",
        "min_workers": 2,
        "tasks": {"tools": {"long_job": "optional"}, "run_timeout_s": 600},
    }
    # A short visibility timeout: SQS hands a dead worker's call to another worker soon.
    extra: dict[str, object] = {"duplicate_wait_s": _DUPLICATE_WAIT_S}
    if broker.kind == "sqs":
        extra["visibility_timeout_s"] = 5
    config = bus_config([pool], backend=broker.kind, **broker.settings(**extra))
    async with running_bus(config) as client:
        yield client


async def test_a_task_reports_progress_and_its_result_outlives_client_and_store(
    bus: BusClient, tmp_path: Path
) -> None:
    first = await BusClient.connect(bus.bus)
    job = marker(tmp_path, "job")
    handle = await first.start_tool("long_job", {"seconds": 8, "step_s": 1, "marker": job})
    assert (await handle.status()).status is TaskStatus.WORKING
    assert not left(job, "finished")  # start returned while the tool runs
    seen: list[Progress] = []
    async for step in handle.progress():
        seen.append(step)
        if len(seen) == 2:
            break
    assert [s.total for s in seen] == [8.0, 8.0]
    assert seen[0].progress < seen[1].progress
    task_id = handle.id
    await first.close()
    # The store dies while the tool runs: its successor reads the answer from the
    # store's reply topic or queue.
    store = await get_actor_async(actor_names.tasks(bus.bus))
    before = await store.stats.remote()
    ray.kill(store, no_restart=False)
    second = await BusClient.connect(bus.bus)
    try:
        reopened = await second.open_task(task_id)
        result = await reopened.result(timeout_s=_OUTCOME_S)
        assert result.content[0].text == "done after 8 steps"  # type: ignore[union-attr]
        assert (await reopened.status()).status is TaskStatus.COMPLETED
    finally:
        await second.close()
    assert (await store.stats.remote())["pid"] != before["pid"]


async def test_cancel_stops_the_tool_on_its_worker_after_a_restart_of_the_store(
    bus: BusClient, tmp_path: Path
) -> None:
    job = marker(tmp_path, "cancelled-job")
    started = await bus.start_tool("long_job", {"seconds": 300, "step_s": 1, "marker": job})
    await wait_until(lambda: left(job, "pid"), _OUTCOME_S)
    # The store that sent the call dies: its successor's broker link never sent it, and
    # must still reach the worker running it (the ledger and every pool's workers).
    store = await get_actor_async(actor_names.tasks(bus.bus))
    before = await store.stats.remote()
    ray.kill(store, no_restart=False)
    handle = await bus.open_task(started.id)
    assert (await handle.cancel()).status is TaskStatus.CANCELLED
    assert (await store.stats.remote())["pid"] != before["pid"]
    await wait_until(lambda: left(job, "cancelled"), _OUTCOME_S)
    with pytest.raises(CallError) as caught:
        await handle.result(timeout_s=_OUTCOME_S)
    assert caught.value.code == 1005
    assert not left(job, "finished")


async def test_a_task_whose_worker_dies_ends_failed_not_working(
    bus: BusClient, tmp_path: Path
) -> None:
    job = marker(tmp_path, "killed")
    handle = await bus.start_tool("long_job", {"seconds": 300, "step_s": 1, "marker": job})
    await wait_until(lambda: left(job, "pid"), _OUTCOME_S)
    os.kill(pid_of(job), signal.SIGKILL)
    with pytest.raises(CallError) as caught:
        await handle.result(timeout_s=_OUTCOME_S)
    assert caught.value.code == 1004  # it may have run: not run again (not idempotent)
    assert (await handle.status()).status is TaskStatus.FAILED
