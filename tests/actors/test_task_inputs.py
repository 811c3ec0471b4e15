"""The task store's input relay: a tool's mid-call requests parked, answered, and ended."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.tasks.inputs import MAX_OPEN_INPUTS, MRTR_IN_TASK, InputOutcome
from actors.tasks.journal import MemoryJournal
from actors.tasks.model import TaskRecord, TaskStatus
from tests.actors.test_task_store import Store, make_store, reply, spec
from transports.envelope import Envelope
from transports.errors import CallError
from transports.frame import Frame
from transports.message import Request, Response

WORKER_A = "raybus/b/worker/p/1"
WORKER_B = "raybus/b/worker/p/2"
CONFIRM = {"message": "Delete a.txt?", "requestedSchema": {"type": "object"}}
ACCEPT = {"action": "accept", "content": {"confirm": True}}


async def answerable_task(store: Store) -> TaskRecord:
    return await store.core.create(spec(accepts_input=True))


async def ask(
    store: Store,
    task: TaskRecord,
    request_id: str,
    *,
    worker: str = WORKER_A,
    call: str | None = None,
    method: str = "elicitation/create",
) -> None:
    """The task's tool asks for input, as its worker relays it to the store."""
    envelope = Envelope(
        client_id="tasks", request_id=call or task.request_id, reply_to=worker, principal="alice"
    )
    request = Request(id=request_id, method=method, params=CONFIRM)
    await store.core.on_frame(Frame.of(envelope, request))


def delivered(store: Store) -> list[tuple[str, Any, Any, Any]]:
    """``(worker, request id, result, error)`` of each answer the store sent a worker."""
    out = []
    for destination, frame in store.ports.answers:
        response = frame.decode()
        assert isinstance(response, Response)
        error = response.error.to_json_dict() if response.error is not None else None
        out.append((destination, response.id, response.result, error))
    return out


async def test_an_input_request_is_parked_under_a_public_key_and_journaled() -> None:
    store = make_store()
    task = await answerable_task(store)
    await ask(store, task, f"{WORKER_A}#7")
    record = store.core.require(task.task_id, "alice", "x")
    assert record.status is TaskStatus.INPUT_REQUIRED
    assert record.input_requests == {"input-1": {"method": "elicitation/create", "params": CONFIRM}}
    # The worker's own id and address are the route back, never shown to the caller.
    assert record.input_routes == {"input-1": [WORKER_A, f"{WORKER_A}#7"]}
    assert TaskRecord.from_json(store.journal.records[task.task_id]) == record
    assert store.ports.answers == []  # it waits for the caller


async def test_each_answer_goes_to_the_worker_that_asked_and_the_rest_stay_outstanding() -> None:
    store = make_store()
    task = await answerable_task(store)
    await ask(store, task, "a#1", worker=WORKER_A)
    await ask(store, task, "b#1", worker=WORKER_B)
    outcome = await store.core.respond(task.task_id, "alice", {"input-2": ACCEPT})
    assert outcome == InputOutcome(answered=("input-2",), ignored=())
    assert delivered(store) == [(WORKER_B, "b#1", ACCEPT, None)]
    record = store.core.require(task.task_id, "alice", "x")
    assert (record.status, list(record.input_requests)) == (TaskStatus.INPUT_REQUIRED, ["input-1"])
    await store.core.respond(task.task_id, "alice", {"input-1": ACCEPT})
    assert delivered(store)[1] == (WORKER_A, "a#1", ACCEPT, None)
    working = store.core.require(task.task_id, "alice", "x")
    assert (working.status, working.input_requests) == (TaskStatus.WORKING, {})
    # The tool resumes in the same call: its answer completes the task.
    await store.core.on_frame(reply(store.ports.submitted[0], result={"content": []}))
    assert store.core.require(task.task_id, "alice", "x").status is TaskStatus.COMPLETED


async def test_a_second_answer_and_an_unknown_key_are_ignored_not_delivered() -> None:
    store = make_store()
    task = await answerable_task(store)
    await ask(store, task, "a#1")
    await ask(store, task, "a#2")
    await store.core.respond(task.task_id, "alice", {"input-1": ACCEPT})
    again = await store.core.respond(
        task.task_id, "alice", {"input-1": ACCEPT, "unknown-key": {"ignored": True}}
    )
    assert again == InputOutcome(answered=(), ignored=("input-1", "unknown-key"))
    assert [d[1] for d in delivered(store)] == ["a#1"]
    # Keys are never reused: the next request after input-2 is input-3.
    await ask(store, task, "a#3")
    assert list(store.core.require(task.task_id, "alice", "x").input_requests) == [
        "input-2",
        "input-3",
    ]


async def test_an_answer_that_is_not_an_object_is_refused_naming_its_key() -> None:
    store = make_store()
    task = await answerable_task(store)
    await ask(store, task, "a#1")
    with pytest.raises(CallError) as refused:
        await store.core.respond(task.task_id, "alice", {"input-1": "yes"})
    assert refused.value.code == -32602
    assert "inputResponses['input-1'] must be an object" in refused.value.message
    with pytest.raises(CallError) as not_a_map:
        await store.core.respond(task.task_id, "alice", None)
    assert "params.inputResponses must be an object" in not_a_map.value.message
    assert store.ports.answers == []
    assert store.core.require(task.task_id, "alice", "x").status is TaskStatus.INPUT_REQUIRED


async def test_answers_for_another_principals_or_an_unknown_task_are_not_found() -> None:
    store = make_store()
    task = await answerable_task(store)
    await ask(store, task, "a#1")
    for task_id, principal in ((task.task_id, "mallory"), ("0nope", "alice")):
        with pytest.raises(CallError) as refused:
            await store.core.respond(task_id, principal, {"input-1": ACCEPT})
        assert refused.value.code == -32602
    assert store.ports.answers == []


async def test_a_task_cancelled_while_waiting_for_input_stops_and_frees_its_worker() -> None:
    store = make_store()
    task = await answerable_task(store)
    await ask(store, task, "a#1")
    await store.core.cancel(task.task_id, "alice")
    record = store.core.require(task.task_id, "alice", "x")
    assert (record.status, record.input_requests) == (TaskStatus.CANCELLED, {})
    # The call is withdrawn (the worker cancels the tool) and the parked request answered
    # with an error, so the worker forgets it.
    assert store.ports.cancelled == [("alice", "tasks", task.request_id)]
    [(worker, request_id, result, error)] = delivered(store)
    assert (worker, request_id, result) == (WORKER_A, "a#1", None)
    assert error is not None
    assert error["code"] == -32603
    late = await store.core.respond(task.task_id, "alice", {"input-1": ACCEPT})
    assert late == InputOutcome(answered=(), ignored=("input-1",))
    assert len(store.ports.answers) == 1


async def test_a_task_waiting_past_its_run_deadline_fails_and_frees_its_worker() -> None:
    store = make_store(deadline_grace_s=5)
    task = await store.core.create(spec(accepts_input=True, run_timeout_s=60))
    await ask(store, task, "a#1")
    store.clock.advance(66)
    await store.core.tick()
    assert store.core.require(task.task_id, "alice", "x").status is TaskStatus.FAILED
    [(worker, request_id, _, error)] = delivered(store)
    assert (worker, request_id, error["code"]) == (WORKER_A, "a#1", -32603)


async def test_a_request_of_a_stale_call_or_past_the_limit_is_refused_at_once() -> None:
    store = make_store()
    task = await answerable_task(store)
    await ask(store, task, "old#1", call=f"{task.task_id}.1.9")
    for n in range(MAX_OPEN_INPUTS + 1):
        await ask(store, task, f"a#{n}")
    refusals = [(d[1], d[3]["message"]) for d in delivered(store)]
    assert refusals == [
        ("old#1", "the task is no longer running"),
        (f"a#{MAX_OPEN_INPUTS}", f"the task already waits for {MAX_OPEN_INPUTS} inputs"),
    ]
    assert len(store.core.require(task.task_id, "alice", "x").input_requests) == MAX_OPEN_INPUTS


async def test_a_restarted_store_still_answers_the_worker_that_asked() -> None:
    first = make_store()
    task = await answerable_task(first)
    await ask(first, task, "a#1")
    second = make_store(first.journal)
    assert await second.core.load() == 1
    await second.core.respond(task.task_id, "alice", {"input-1": ACCEPT})
    assert delivered(second) == [(WORKER_A, "a#1", ACCEPT, None)]


async def test_an_mrtr_round_answered_inside_a_task_fails_it_with_a_clear_error() -> None:
    store = make_store()
    task = await answerable_task(store)
    asking = {"resultType": "input_required", "inputRequests": {"k": {"method": "roots/list"}}}
    await store.core.on_frame(reply(store.ports.submitted[0], result=asking))
    record = store.core.require(task.task_id, "alice", "x")
    assert record.status is TaskStatus.FAILED
    assert record.outcome == {"error": {"code": -32603, "message": MRTR_IN_TASK}}


async def test_a_waiter_sees_an_input_request_only_once_it_is_journaled() -> None:
    """A caller may answer at once, and the store may restart before it does: the request
    and its way back must already be in the journal when a waiter is told of it."""
    gate = asyncio.Event()
    gate.set()

    class HeldJournal(MemoryJournal):
        async def put(self, record: TaskRecord) -> None:
            await gate.wait()
            await super().put(record)

    store = make_store(HeldJournal())
    task = await answerable_task(store)
    gate.clear()  # the next write (the parked request) waits
    waiting = asyncio.create_task(store.core.wait(task.task_id, "alice", task.version, 60))
    asking = asyncio.create_task(ask(store, task, f"{WORKER_A}#7"))
    for _ in range(5):  # let both run up to where they wait
        await asyncio.sleep(0)
    assert not waiting.done()
    gate.set()
    seen = await waiting
    await asking
    assert seen.input_requests == {"input-1": {"method": "elicitation/create", "params": CONFIRM}}
    assert TaskRecord.from_json(store.journal.records[task.task_id]).input_requests


async def test_an_error_answer_goes_to_the_worker_as_the_requests_error() -> None:
    store = make_store()
    task = await answerable_task(store)
    await ask(store, task, f"{WORKER_A}#1")
    declined = {"code": -32042, "message": "the user closed the dialog", "data": {"why": "x"}}
    outcome = await store.core.fail_input(task.task_id, "alice", "input-1", declined)
    again = await store.core.fail_input(task.task_id, "alice", "input-1", declined)
    record = store.core.get(task.task_id, "alice")
    assert record is not None
    assert (outcome.answered, again.ignored) == (("input-1",), ("input-1",))
    assert delivered(store) == [(WORKER_A, f"{WORKER_A}#1", None, declined)]  # once
    assert record.status is TaskStatus.WORKING
    assert record.input_requests == {}


@pytest.mark.parametrize(
    ("error", "field"),
    [
        ("no", "error must be an object"),
        ({"message": "m"}, "error.code must be an integer"),
        ({"code": True, "message": "m"}, "error.code must be an integer"),
        ({"code": 1}, "error.message must be a string"),
    ],
)
async def test_a_malformed_error_answer_is_refused_naming_its_field(
    error: object, field: str
) -> None:
    store = make_store()
    task = await answerable_task(store)
    await ask(store, task, f"{WORKER_A}#1")
    with pytest.raises(CallError) as refused:
        await store.core.fail_input(task.task_id, "alice", "input-1", error)
    assert refused.value.code == -32602
    assert field in refused.value.message
    assert delivered(store) == []
