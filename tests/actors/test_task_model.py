from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from actors.tasks.model import (
    RELATED_TASK_META,
    Answered,
    CancelRequested,
    DeadlinePassed,
    Dispatched,
    Errored,
    InputAnswered,
    InputAsked,
    Progressed,
    Refused,
    Rerun,
    TaskEvent,
    TaskRecord,
    TaskStatus,
    cancel_ack_2026,
    create_result_2025,
    create_result_2026,
    iso_time,
    new_task_id,
    parse_request_id,
    request_id_of,
    result_2025,
    transition,
    view_2025,
    view_2026,
)

OK = {"content": [{"type": "text", "text": "done"}], "isError": False}
TOOL_ERROR = {"content": [{"type": "text", "text": "bad input"}], "isError": True}
LOST = {"code": 1004, "message": "worker lost; the call may have run"}


def record(**changes: Any) -> TaskRecord:
    base = TaskRecord(
        task_id=new_task_id(),
        principal="alice",
        tool="risk_model",
        arguments={"book": "EU"},
        created_at=1_764_000_000.0,
        updated_at=1_764_000_000.0,
        ttl_ms=3_660_000,
        poll_interval_ms=2000,
        run_deadline=1_764_003_600.0,
    )
    return replace(base, **changes)


def apply(task: TaskRecord, *events: TaskEvent) -> TaskRecord:
    for event in events:
        changed = transition(task, event, task.updated_at + 1)
        assert changed is not None, event
        task = changed
    return task


def test_ids_are_unguessable_distinct_and_carry_attempt_and_round_in_request_ids() -> None:
    ids = {new_task_id() for _ in range(1000)}
    assert len(ids) == 1000
    task_id = next(iter(ids))
    assert "." not in task_id
    assert len(task_id) >= 24
    assert parse_request_id(request_id_of(task_id, 2, 3)) == (task_id, 2, 3)
    assert parse_request_id("17") is None
    assert parse_request_id("a.b.c") is None


def test_times_are_iso_8601_utc() -> None:
    stamp = iso_time(1_764_000_000.25)
    assert stamp == "2025-11-24T16:00:00.250Z"
    assert datetime.fromisoformat(stamp).timestamp() == 1_764_000_000.25


def test_a_record_round_trips_through_its_journal_json() -> None:
    task = apply(record(), Dispatched(), Progressed(1, 1, 2, 5, "two"))
    assert TaskRecord.from_json(task.to_json()) == task


def test_terminal_states_are_sticky() -> None:
    for terminal_event in (
        Answered(1, 1, OK),
        Errored(1, 1, LOST),
        CancelRequested(),
        DeadlinePassed({"code": 1001, "message": "late"}),
    ):
        done = apply(record(), terminal_event)
        assert done.status.terminal
        for later in (Answered(1, 1, OK), CancelRequested(), Progressed(1, 1, 1), Rerun(1, "x")):
            assert transition(done, later, done.updated_at + 1) is None


def test_answers_of_a_stale_attempt_or_round_are_dropped() -> None:
    task = record(attempt=2, round=1)
    assert transition(task, Answered(1, 1, OK), 2.0) is None
    assert transition(task, Errored(2, 2, LOST), 2.0) is None
    assert transition(task, Progressed(1, 1, 1.0), 2.0) is None
    assert apply(task, Answered(2, 1, OK)).status is TaskStatus.COMPLETED


ELICIT = {"method": "elicitation/create", "params": {"message": "Sure?"}}


def test_input_required_lasts_until_every_outstanding_request_is_answered() -> None:
    first = apply(record(), InputAsked(1, 1, "input-1", ELICIT, ("raybus/w/1", "w#1")))
    both = apply(first, InputAsked(1, 1, "input-2", ELICIT, ("raybus/w/1", "w#2")))
    assert (both.status, both.input_count) == (TaskStatus.INPUT_REQUIRED, 2)
    assert both.input_routes == {"input-1": ["raybus/w/1", "w#1"], "input-2": ["raybus/w/1", "w#2"]}
    one_left = apply(both, InputAnswered(frozenset({"input-1", "never-issued"})))
    assert (one_left.status, list(one_left.input_requests)) == (
        TaskStatus.INPUT_REQUIRED,
        ["input-2"],
    )
    working = apply(one_left, InputAnswered(frozenset({"input-2"})))
    assert (working.status, working.input_requests, working.input_routes) == (
        TaskStatus.WORKING,
        {},
        {},
    )
    assert working.round == 1  # the same call goes on: nothing is run again
    assert transition(working, InputAnswered(frozenset({"input-2"})), 9.0) is None


def test_an_input_request_of_a_stale_call_or_a_reused_key_changes_nothing() -> None:
    task = record(attempt=2)
    assert transition(task, InputAsked(1, 1, "input-1", ELICIT, ("w", "w#1")), 2.0) is None
    asked = apply(task, InputAsked(2, 1, "input-1", ELICIT, ("w", "w#1")))
    assert transition(asked, InputAsked(2, 1, "input-1", ELICIT, ("w", "w#9")), 3.0) is None


def test_an_ending_task_forgets_its_outstanding_input_requests() -> None:
    asked = apply(record(), InputAsked(1, 1, "input-1", ELICIT, ("w", "w#1")))
    for event in (CancelRequested(), Answered(1, 1, OK), Errored(1, 1, LOST)):
        ended = apply(asked, event)
        assert (ended.input_requests, ended.input_routes) == ({}, {})


def test_a_rerun_starts_a_new_attempt_until_max_attempts() -> None:
    task = record(max_attempts=2, rerun_lost=True, dispatched=True)
    again = apply(task, Rerun(1, "worker lost; running again (attempt 2)"))
    assert (again.attempt, again.dispatched) == (2, False)
    assert transition(again, Rerun(2, "again"), 5.0) is None


def test_a_refusal_keeps_the_task_working_and_undispatched() -> None:
    refused = apply(record(dispatched=True), Refused(1, 1, "waiting for capacity"))
    assert (refused.status, refused.dispatched) == (TaskStatus.WORKING, False)


def test_progress_becomes_the_status_message() -> None:
    task = apply(record(), Progressed(1, 1, 3, 10))
    assert (task.progress, task.total, task.status_message) == (3, 10, "3/10")
    assert apply(task, Progressed(1, 1, 4, 10, "step 4")).status_message == "step 4"


def test_2025_view_names_ttl_and_poll_interval_and_reports_tool_errors_as_failed() -> None:
    created = create_result_2025(record())
    assert set(created) == {"task"}
    assert created["task"]["status"] == "working"
    assert created["task"]["ttl"] == 3_660_000
    assert created["task"]["pollInterval"] == 2000
    failed = view_2025(apply(record(), Answered(1, 1, TOOL_ERROR)))
    assert (failed["status"], failed["statusMessage"]) == ("failed", "bad input")
    assert "ttlMs" not in failed
    assert "result" not in failed


def test_2025_result_is_the_calls_own_result_with_related_task_meta() -> None:
    done = apply(record(), Answered(1, 1, OK))
    result = result_2025(done)
    assert result["content"] == OK["content"]
    assert result["_meta"][RELATED_TASK_META] == {"taskId": done.task_id}
    assert result_2025(apply(record(), Errored(1, 1, LOST))) == {"error": LOST}


def test_2026_views_are_flat_with_integer_ms_fields_and_inline_outcomes() -> None:
    created = create_result_2026(record())
    assert created["resultType"] == "task"
    assert created["status"] == "working"
    assert created["ttlMs"] == 3_660_000
    assert created["pollIntervalMs"] == 2000
    assert not {"ttl", "pollInterval", "task", "result", "error", "requestState"} & set(created)
    answer = {**TOOL_ERROR, "_meta": {RELATED_TASK_META: {"taskId": "x"}}}
    completed = view_2026(apply(record(), Answered(1, 1, answer)))
    assert completed["resultType"] == "complete"
    assert completed["status"] == "completed"
    assert completed["result"] == TOOL_ERROR  # isError stays completed; no related-task meta
    failed = view_2026(apply(record(), Errored(1, 1, LOST)))
    assert failed["error"] == LOST
    assert "result" not in failed
    assert cancel_ack_2026() == {"resultType": "complete"}


_EVENTS = st.one_of(
    st.builds(Dispatched),
    st.builds(
        Progressed,
        st.integers(1, 4),
        st.integers(1, 3),
        st.floats(0, 100),
        st.none() | st.just(100.0),
    ),
    st.builds(Answered, st.integers(1, 4), st.integers(1, 3), st.just(OK)),
    st.builds(Errored, st.integers(1, 4), st.integers(1, 3), st.just(LOST)),
    st.builds(Rerun, st.integers(1, 4), st.just("again")),
    st.builds(Refused, st.integers(1, 4), st.integers(1, 3), st.just("busy")),
    st.builds(
        InputAsked,
        st.integers(1, 4),
        st.integers(1, 3),
        st.sampled_from(["input-1", "input-2"]),
        st.just({"method": "m"}),
        st.just(("w", "w#1")),
    ),
    st.builds(InputAnswered, st.frozensets(st.sampled_from(["input-1", "input-2", "x"]))),
    st.builds(CancelRequested),
    st.builds(DeadlinePassed, st.just({"code": 1001, "message": "late"})),
)


@given(st.lists(_EVENTS, max_size=40), st.integers(1, 3))
def test_any_event_sequence_keeps_one_terminal_status_and_increasing_versions(
    events: list[TaskEvent], max_attempts: int
) -> None:
    task = record(max_attempts=max_attempts, rerun_lost=True)
    first_terminal: TaskStatus | None = None
    now = task.updated_at
    for event in events:
        now += 1
        changed = transition(task, event, now)
        if changed is None:
            continue
        assert changed.version > task.version
        assert changed.updated_at >= task.updated_at
        assert 1 <= changed.attempt <= max_attempts
        assert changed.round >= 1
        assert changed.input_requests.keys() == changed.input_routes.keys()
        waiting = changed.status is TaskStatus.INPUT_REQUIRED
        assert waiting == bool(changed.input_requests) or changed.status.terminal
        if task.status.terminal:  # pragma: no cover - the property under test
            raise AssertionError(f"{task.status} left for {changed.status}")
        task = changed
        if task.status.terminal and first_terminal is None:
            first_terminal = task.status
    if first_terminal is not None:
        assert task.status is first_terminal
