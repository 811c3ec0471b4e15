"""The edge journal: its state machine, durability across reopen and crash, its limits."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from transports.edge.journal import (
    EXPIRED_MESSAGE,
    HORIZON_MESSAGE,
    Journal,
    JournalError,
    JournalFull,
    RowState,
    Submission,
)
from transports.errors import BusErrorCode

# A child process imports aiosqlite and writes a few hundred rows: a bound for a cold,
# loaded 2-core machine, it measures nothing.
_CHILD_S = 120


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    opened = await Journal.open(tmp_path / "edge.db")
    yield opened
    await opened.close()


def call(key: str = "k") -> Submission:
    return Submission("append", {"key": key})


async def state_of(journal: Journal, request_id: str) -> RowState:
    row = await journal.get(request_id)
    assert row is not None
    return row.state


def run_child(path: Path, mode: str, count: int) -> int:
    child = subprocess.run(
        [sys.executable, "-m", "tests.transports.edge.journal_child", str(path), mode, str(count)],
        capture_output=True,
        text=True,
        timeout=_CHILD_S,
        check=False,
    )
    assert child.returncode in (0, 17), child.stderr[-2000:]
    return child.returncode


async def test_a_submitted_row_is_queued_with_its_arguments_and_default_key(
    journal: Journal,
) -> None:
    request_id = await journal.enqueue(Submission("append", {"key": "a"}, {"region": "eu"}))
    row = await journal.get(request_id)
    assert row is not None
    assert row.state == RowState.QUEUED
    assert row.idempotency_key == request_id
    assert row.params == {"name": "append", "arguments": {"key": "a"}}
    assert row.labels == {"region": "eu"}
    assert row.first_sent_at is None
    assert journal.unanswered == 1


async def test_a_row_goes_queued_sending_answered_then_claimed(journal: Journal) -> None:
    request_id = await journal.enqueue(call())
    sending = await journal.mark_sending(request_id)
    assert sending is not None
    assert sending.state == RowState.SENDING
    assert sending.attempts == 1
    assert sending.first_sent_at is not None
    response = {"jsonrpc": "2.0", "id": request_id, "result": {"content": []}}
    assert await journal.mark_answered(request_id, response)
    row = await journal.get(request_id)
    assert row is not None
    assert row.state == RowState.ANSWERED
    assert row.response == response
    assert journal.unanswered == 0
    assert [r.request_id for r in await journal.unclaimed(0, 10)] == [request_id]
    await journal.claim(request_id)
    assert await journal.unclaimed(0, 10) == []


async def test_an_attempt_that_certainly_did_not_leave_puts_a_fresh_row_back_in_the_queue(
    journal: Journal,
) -> None:
    request_id = await journal.enqueue(call())
    await journal.mark_sending(request_id)
    await journal.mark_not_sent(request_id, was_queued=True)
    row = await journal.get(request_id)
    assert row is not None
    assert row.state == RowState.QUEUED
    assert row.first_sent_at is None


async def test_a_row_that_may_have_left_never_returns_to_the_queue(journal: Journal) -> None:
    request_id = await journal.enqueue(call())
    first = await journal.mark_sending(request_id)  # maybe sent: the row stays 'sending'
    assert first is not None
    second = await journal.mark_sending(request_id)  # the resend, same key
    assert second is not None
    assert second.attempts == 2
    assert second.first_sent_at == first.first_sent_at
    assert second.idempotency_key == first.idempotency_key
    await journal.mark_not_sent(request_id, was_queued=False)  # the resend did not leave
    assert await state_of(journal, request_id) == RowState.SENDING


async def test_final_states_are_final(journal: Journal) -> None:
    answered = await journal.enqueue(call("a"))
    failed = await journal.enqueue(call("b"))
    await journal.mark_answered(answered, {"jsonrpc": "2.0", "id": answered, "result": {}})
    assert await journal.mark_failed(failed, 1007, "upstream failed")
    for request_id in (answered, failed):
        assert await journal.mark_sending(request_id) is None
        assert not await journal.mark_answered(request_id, {"result": {}})
        assert not await journal.mark_failed(request_id, 1, "late")
        assert not await journal.cancel(request_id)
    assert await state_of(journal, answered) == RowState.ANSWERED
    assert await state_of(journal, failed) == RowState.FAILED
    assert await journal.to_send(0, 10) == []


async def test_only_a_row_that_has_not_left_can_be_cancelled(journal: Journal) -> None:
    queued = await journal.enqueue(call("a"))
    sending = await journal.enqueue(call("b"))
    await journal.mark_sending(sending)
    assert await journal.cancel(queued)
    assert not await journal.cancel(sending)
    assert await state_of(journal, queued) == RowState.CANCELLED
    assert await state_of(journal, sending) == RowState.SENDING
    assert [r.request_id for r in await journal.to_send(0, 10)] == [sending]


async def test_rows_are_offered_for_sending_in_submit_order(journal: Journal) -> None:
    ids = await asyncio.gather(*(journal.enqueue(call(f"k{i}")) for i in range(50)))
    offered = await journal.to_send(0, 100)
    assert [r.request_id for r in offered] == list(ids)
    assert [r.params["arguments"]["key"] for r in offered] == [f"k{i}" for i in range(50)]
    later = await journal.to_send(offered[9].seq, 5)
    assert [r.request_id for r in later] == list(ids[10:15])


async def test_a_queued_row_past_its_expiry_fails_with_1001(tmp_path: Path) -> None:
    clock = FakeClock()
    journal = await Journal.open(tmp_path / "edge.db", clock=clock)
    try:
        late = await journal.enqueue(Submission("append", {}, expires_at=clock.now + 60))
        never = await journal.enqueue(Submission("append", {}))
        clock.now += 59
        assert await journal.expire(horizon_s=3600) == []
        clock.now += 1
        assert await journal.expire(horizon_s=3600) == [late]
        row = await journal.get(late)
        assert row is not None
        assert (row.state, row.error_code) == (RowState.FAILED, BusErrorCode.DEADLINE_EXCEEDED)
        assert row.error_message == EXPIRED_MESSAGE
        assert await state_of(journal, never) == RowState.QUEUED
        assert journal.unanswered == 1
    finally:
        await journal.close()


async def test_a_row_maybe_sent_longer_ago_than_the_horizon_fails_with_1004(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    journal = await Journal.open(tmp_path / "edge.db", clock=clock)
    try:
        sent = await journal.enqueue(call("a"))
        queued = await journal.enqueue(call("b"))
        await journal.mark_sending(sent)
        clock.now += 100
        await journal.mark_sending(sent)  # a resend keeps the first moment it may have left
        assert await journal.expire(horizon_s=100) == []
        clock.now += 0.5
        assert await journal.expire(horizon_s=100) == [sent]
        row = await journal.get(sent)
        assert row is not None
        assert (row.state, row.error_code) == (RowState.FAILED, BusErrorCode.OUTCOME_UNKNOWN)
        assert row.error_message == HORIZON_MESSAGE
        assert await state_of(journal, queued) == RowState.QUEUED  # never sent: no horizon
    finally:
        await journal.close()


async def test_a_full_journal_refuses_new_rows_until_one_is_answered(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "edge.db", max_rows=3)
    try:
        ids = [await journal.enqueue(call(f"k{i}")) for i in range(3)]
        with pytest.raises(JournalFull, match="3 requests are waiting"):
            await journal.enqueue(call("over"))
        await journal.mark_answered(ids[0], {"jsonrpc": "2.0", "id": ids[0], "result": {}})
        await journal.enqueue(call("fits"))
        assert journal.unanswered == 3
    finally:
        await journal.close()


async def test_an_idempotency_key_is_used_once_per_journal(journal: Journal) -> None:
    await journal.enqueue(Submission("append", {}, idempotency_key="order-1"))
    with pytest.raises(ValueError, match="order-1"):
        await journal.enqueue(Submission("append", {}, idempotency_key="order-1"))
    both = [journal.enqueue(Submission("append", {}, idempotency_key="order-2")) for _ in "ab"]
    outcomes = await asyncio.gather(*both, return_exceptions=True)
    assert sum(isinstance(o, ValueError) for o in outcomes) == 1


async def test_rows_and_the_client_id_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    first = await Journal.open(path)
    request_id = await first.enqueue(call())
    await first.mark_sending(request_id)
    client_id = first.client_id
    await first.close()
    second = await Journal.open(path)
    try:
        assert second.client_id == client_id
        assert len(client_id) == 32
        assert [r.request_id for r in await second.to_send(0, 10)] == [request_id]
        assert second.unanswered == 1
    finally:
        await second.close()


async def test_prune_deletes_only_claimed_rows_older_than_keep(tmp_path: Path) -> None:
    clock = FakeClock()
    journal = await Journal.open(tmp_path / "edge.db", clock=clock)
    try:
        claimed = await journal.enqueue(call("a"))
        unclaimed = await journal.enqueue(call("b"))
        for request_id in (claimed, unclaimed):
            await journal.mark_answered(request_id, {"id": request_id, "result": {}})
        await journal.claim(claimed)
        clock.now += 10
        assert await journal.prune(keep_s=60) == 0
        clock.now += 60
        assert await journal.prune(keep_s=60) == 1
        assert await journal.get(claimed) is None
        assert await journal.get(unclaimed) is not None
    finally:
        await journal.close()


async def test_a_journal_of_a_newer_schema_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(JournalError, match="schema version 99 is newer than 1"):
        await Journal.open(path)


async def test_a_crash_inside_a_submit_batch_leaves_none_of_it(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    assert run_child(path, "inside-batch", 300) == 17
    journal = await Journal.open(path)
    try:
        assert journal.unanswered == 0
        assert await journal.to_send(0, 10) == []
    finally:
        await journal.close()


async def test_a_crash_after_a_submit_batch_returned_keeps_all_of_it(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    assert run_child(path, "after-batch", 300) == 0
    journal = await Journal.open(path)
    try:
        rows = await journal.to_send(0, 1000)
        assert [r.params["arguments"]["key"] for r in rows] == [f"k{i}" for i in range(300)]
    finally:
        await journal.close()


async def test_rows_marked_sending_before_a_crash_are_sent_again_with_their_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "edge.db"
    assert run_child(path, "sending", 20) == 0
    journal = await Journal.open(path)  # no clean close: the integrity check runs
    try:
        rows = await journal.to_send(0, 100)
        assert len(rows) == 20
        assert {r.state for r in rows} == {RowState.SENDING}
        assert all(r.first_sent_at is not None for r in rows)
        resent = await journal.mark_sending(rows[0].request_id)
        assert resent is not None
        assert resent.idempotency_key == rows[0].idempotency_key
        assert resent.attempts == 2
    finally:
        await journal.close()


async def test_a_write_cancelled_at_any_point_leaves_no_transaction_open(journal: Journal) -> None:
    # aiosqlite runs each statement on its own thread, where a cancelled await does not
    # stop it: a BEGIN that ran after its caller was cancelled used to leave the file in
    # a transaction nobody ended, and every later write failed.
    for turns in range(40):
        write = asyncio.create_task(journal.set_meta("cancelled", str(turns)))
        for _ in range(turns):
            await asyncio.sleep(0)  # let the write get as far as it gets in these turns
        write.cancel()
        await asyncio.gather(write, return_exceptions=True)
        await journal.set_meta("after", str(turns))  # raised "within a transaction" before
        assert await journal.meta("after") == str(turns)
