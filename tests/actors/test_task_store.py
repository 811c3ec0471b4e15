from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from actors.tasks.journal import MemoryJournal
from actors.tasks.model import TaskRecord, TaskStatus
from actors.tasks.spec import TaskSettings, TaskSpec
from actors.tasks.store import TaskStoreCore
from tests.actors.fakes import FakeClock
from transports.envelope import CorrelationKey, Envelope
from transports.errors import CallError
from transports.frame import Frame
from transports.message import Notification, Request, Response

OK = {"content": [{"type": "text", "text": "42"}], "isError": False}


@dataclass
class RecordingTaskPorts:
    address: str = "raybus/b/tasks"
    submitted: list[Frame] = field(default_factory=list)
    cancelled: list[CorrelationKey] = field(default_factory=list)
    answers: list[tuple[str, Frame]] = field(default_factory=list)

    def submit(self, frames: list[Frame]) -> None:
        self.submitted.extend(frames)

    def cancel(self, keys: list[CorrelationKey]) -> None:
        self.cancelled.extend(keys)

    def answer(self, destination: str, frame: Frame) -> None:
        self.answers.append((destination, frame))


@dataclass
class Store:
    core: TaskStoreCore
    ports: RecordingTaskPorts
    journal: MemoryJournal
    clock: FakeClock


def make_store(journal: MemoryJournal | None = None, **settings: Any) -> Store:
    ports = RecordingTaskPorts()
    journal = journal or MemoryJournal()
    clock = FakeClock(1_764_000_000.0)
    core = TaskStoreCore(ports, journal, TaskSettings(**settings), clock=clock)
    return Store(core, ports, journal, clock)


def spec(**changes: Any) -> TaskSpec:
    return TaskSpec(**{"principal": "alice", "tool": "long_job", "arguments": {"n": 1}} | changes)


def reply(call: Frame, *, result: Any = None, error: dict[str, Any] | None = None) -> Frame:
    request = call.decode()
    assert isinstance(request, Request)
    if error is not None:
        return Frame.of(call.envelope, Response.failure(request.id, **error))
    return Frame.of(call.envelope, Response.success(request.id, result))


def progress(call: Frame, value: float, total: float | None = None) -> Frame:
    params = {"progressToken": call.envelope.request_id.split(".")[0], "progress": value}
    if total is not None:
        params["total"] = total
    return Frame.of(call.envelope, Notification(method="notifications/progress", params=params))


async def test_create_journals_the_task_before_submitting_or_returning_it() -> None:
    gate = asyncio.Event()

    class HeldJournal(MemoryJournal):
        async def put(self, record: TaskRecord) -> None:
            await gate.wait()
            await super().put(record)

    store = make_store(HeldJournal())
    creating = asyncio.create_task(store.core.create(spec()))
    await asyncio.sleep(0)  # let create run up to its journal write
    assert not creating.done()
    assert store.ports.submitted == []
    gate.set()
    task = await creating
    assert task.task_id in store.journal.records
    [call] = store.ports.submitted
    envelope = call.envelope
    assert (envelope.client_id, envelope.request_id) == ("tasks", f"{task.task_id}.1.1")
    assert envelope.reply_to == "raybus/b/tasks"
    assert envelope.name == "long_job"
    assert ("task", task.task_id) in envelope.attributes
    request = call.decode()
    assert isinstance(request, Request)
    assert isinstance(request.params, dict)
    assert request.params["_meta"]["progressToken"] == task.task_id


async def test_an_answer_completes_its_task_and_wakes_a_waiter() -> None:
    store = make_store()
    task = await store.core.create(spec())
    # Woken by the change, not by its timeout (which would also return the task as is).
    waiting = asyncio.create_task(store.core.wait(task.task_id, "alice", task.version, 30))
    await asyncio.sleep(0)  # the waiter is waiting before the answer comes
    assert not waiting.done()
    await store.core.on_frame(reply(store.ports.submitted[0], result=OK))
    async with asyncio.timeout(5):
        done = await waiting
    assert done.status is TaskStatus.COMPLETED
    assert done.outcome == {"result": OK}
    assert TaskRecord.from_json(store.journal.records[task.task_id]).status is TaskStatus.COMPLETED


async def test_a_json_rpc_error_fails_the_task() -> None:
    store = make_store()
    task = await store.core.create(spec())
    error = {"code": -32602, "message": "bad arguments"}
    await store.core.on_frame(reply(store.ports.submitted[0], error=error))
    failed = store.core.require(task.task_id, "alice", "tasks/get")
    assert failed.status is TaskStatus.FAILED
    assert failed.outcome == {"error": error}


async def test_progress_updates_the_task_and_is_journaled_at_most_once_a_second() -> None:
    store = make_store()
    task = await store.core.create(spec())
    call = store.ports.submitted[0]
    await store.core.on_frame(progress(call, 1, 10))
    writes = store.journal.writes
    await store.core.on_frame(progress(call, 2, 10))
    assert store.journal.writes == writes  # within the second: memory only
    seen = store.core.require(task.task_id, "alice", "tasks/get")
    assert (seen.progress, seen.status_message) == (2, "2/10")
    store.clock.advance(1.5)
    await store.core.tick()
    assert TaskRecord.from_json(store.journal.records[task.task_id]).progress == 2


async def test_a_lost_worker_reruns_a_task_that_allows_it_up_to_max_attempts() -> None:
    store = make_store()
    task = await store.core.create(spec(rerun_lost=True, max_attempts=2))
    lost = {"code": 1004, "message": "worker lost"}
    await store.core.on_frame(reply(store.ports.submitted[0], error=lost))
    assert [f.envelope.request_id for f in store.ports.submitted][-1] == f"{task.task_id}.2.1"
    rerun = store.core.require(task.task_id, "alice", "tasks/get")
    assert (rerun.status, rerun.attempt) == (TaskStatus.WORKING, 2)
    await store.core.on_frame(reply(store.ports.submitted[0], result=OK))  # attempt 1: stale
    assert store.core.require(task.task_id, "alice", "tasks/get").status is TaskStatus.WORKING
    await store.core.on_frame(reply(store.ports.submitted[-1], error=lost))
    final = store.core.require(task.task_id, "alice", "tasks/get")
    assert final.status is TaskStatus.FAILED
    assert final.outcome == {"error": lost}
    assert len(store.ports.submitted) == 2


async def test_a_lost_worker_fails_a_task_that_may_not_run_twice() -> None:
    store = make_store()
    task = await store.core.create(spec(max_attempts=3))
    await store.core.on_frame(
        reply(store.ports.submitted[0], error={"code": 1004, "message": "lost"})
    )
    assert store.core.require(task.task_id, "alice", "x").status is TaskStatus.FAILED
    assert len(store.ports.submitted) == 1


async def test_a_refused_call_is_submitted_again_after_its_retry_hint() -> None:
    store = make_store()
    task = await store.core.create(spec())
    busy = {"code": 1002, "message": "overloaded", "data": {"retryAfterSeconds": 3}}
    await store.core.on_frame(reply(store.ports.submitted[0], error=busy))
    assert store.core.require(task.task_id, "alice", "x").status is TaskStatus.WORKING
    store.clock.advance(2)
    await store.core.tick()
    assert len(store.ports.submitted) == 1
    store.clock.advance(1.5)
    await store.core.tick()
    assert len(store.ports.submitted) == 2
    assert store.ports.submitted[1].envelope.request_id == f"{task.task_id}.1.1"


async def test_the_sweeper_fails_and_cancels_a_task_past_its_run_deadline() -> None:
    store = make_store(deadline_grace_s=5)
    task = await store.core.create(spec(run_timeout_s=60))
    store.clock.advance(64)
    await store.core.tick()
    assert store.core.require(task.task_id, "alice", "x").status is TaskStatus.WORKING
    store.clock.advance(2)
    await store.core.tick()
    late = store.core.require(task.task_id, "alice", "x")
    assert late.status is TaskStatus.FAILED
    assert late.outcome is not None
    assert late.outcome["error"]["code"] == 1001
    assert store.ports.cancelled == [("alice", "tasks", f"{task.task_id}.1.1")]


async def test_a_task_is_deleted_once_its_ttl_passed_never_before_its_run_could_end() -> None:
    store = make_store()
    task = await store.core.create(spec(run_timeout_s=600, ttl_s=10))
    assert task.ttl_ms == 660_000  # raised to the run timeout plus a minute
    await store.core.on_frame(reply(store.ports.submitted[0], result=OK))
    store.clock.advance(659)
    await store.core.tick()
    assert store.core.get(task.task_id, "alice") is not None
    store.clock.advance(2)
    await store.core.tick()
    assert store.core.get(task.task_id, "alice") is None
    assert task.task_id not in store.journal.records


async def test_another_principal_cannot_see_or_cancel_a_task() -> None:
    store = make_store()
    task = await store.core.create(spec())
    assert store.core.get(task.task_id, "mallory") is None
    with pytest.raises(CallError) as caught:
        await store.core.cancel(task.task_id, "mallory")
    assert caught.value.code == -32602
    assert store.core.get(task.task_id, "alice") is not None
    assert [t.task_id for t in store.core.list_tasks("alice")] == [task.task_id]
    assert store.core.list_tasks("mallory") == []


async def test_cancel_is_sticky_and_withdraws_the_call() -> None:
    store = make_store()
    task = await store.core.create(spec())
    cancelled = await store.core.cancel(task.task_id, "alice")
    assert cancelled.status is TaskStatus.CANCELLED
    assert store.ports.cancelled == [("alice", "tasks", f"{task.task_id}.1.1")]
    await store.core.on_frame(reply(store.ports.submitted[0], result=OK))  # finished anyway
    assert store.core.require(task.task_id, "alice", "x").status is TaskStatus.CANCELLED
    again = await store.core.cancel(task.task_id, "alice")
    assert again == store.core.require(task.task_id, "alice", "x")
    assert len(store.ports.cancelled) == 1


async def test_limits_on_open_tasks_refuse_create() -> None:
    store = make_store(max_open_per_principal=2)
    await store.core.create(spec())
    await store.core.create(spec())
    with pytest.raises(CallError) as caught:
        await store.core.create(spec())
    assert "max_open_per_principal" in caught.value.message
    await store.core.create(spec(principal="bob"))


async def test_a_result_over_the_size_limit_fails_the_task() -> None:
    store = make_store(max_result_bytes=100)
    task = await store.core.create(spec())
    big = {"content": [{"type": "text", "text": "x" * 200}]}
    await store.core.on_frame(reply(store.ports.submitted[0], result=big))
    failed = store.core.require(task.task_id, "alice", "x")
    assert failed.status is TaskStatus.FAILED
    assert "too large" in (failed.status_message or "")


async def test_a_restarted_store_reloads_its_tasks_and_submits_those_never_submitted() -> None:
    first = make_store()
    running = await first.core.create(spec())
    unsent = await first.core.create(spec(tool="other"))
    # As if the store died between journaling a task and submitting its call:
    first.journal.records[unsent.task_id] = replace(unsent, dispatched=False).to_json()
    second = make_store(first.journal)
    assert await second.core.load() == 2
    assert [f.envelope.name for f in second.ports.submitted] == ["other"]
    # The first incarnation's call answers the second.
    await second.core.on_frame(reply(first.ports.submitted[0], result=OK))
    assert second.core.require(running.task_id, "alice", "x").status is TaskStatus.COMPLETED


async def test_server_requests_of_a_task_whose_caller_cannot_answer_are_refused_at_once() -> None:
    store = make_store()
    task = await store.core.create(spec())
    worker_envelope = Envelope(
        client_id="tasks", request_id=f"{task.task_id}.1.1", reply_to="raybus/b/worker/p/1"
    )
    ask = Request(id="s1", method="elicitation/create", params={"message": "sure?"})
    await store.core.on_frame(Frame.of(worker_envelope, ask))
    [(destination, answer)] = store.ports.answers
    response = answer.decode()
    assert destination == "raybus/b/worker/p/1"
    assert isinstance(response, Response)
    assert response.error is not None
    assert response.error.code == -32601


async def test_calls_a_dead_router_held_follow_the_lost_worker_rule() -> None:
    store = make_store()
    plain = await store.core.create(spec())
    safe = await store.core.create(spec(rerun_lost=True, max_attempts=2))
    held = [f.envelope.request_id for f in store.ports.submitted]
    await store.core.calls_lost([*held, "unknown.1.1"], "the bus router restarted")
    failed = store.core.require(plain.task_id, "alice", "x")
    assert failed.status is TaskStatus.FAILED
    assert failed.outcome == {"error": {"code": 1004, "message": "the bus router restarted"}}
    rerun = store.core.require(safe.task_id, "alice", "x")
    assert (rerun.status, rerun.attempt) == (TaskStatus.WORKING, 2)
    assert not store.core.is_current(held[1])
    assert store.core.is_current(rerun.request_id)
