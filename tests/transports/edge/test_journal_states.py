"""The journal's state machine under random submit / send / answer / crash / reopen.

A model says what each row's state must be. After every step the journal agrees with
it: an answered row stays answered with its first response, nothing leaves a final
state, a row that may have left never returns to ``queued``, rows are offered in submit
order, and a crash (the connection dropped without a clean close) loses no commit.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from transports.edge.journal import Journal, RowState, Submission

_UNANSWERED = (RowState.QUEUED, RowState.SENDING)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class JournalMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.folder = Path(tempfile.mkdtemp(prefix="edge-journal-"))
        self.clock = Clock()
        self.journal = self.run(Journal.open(self.folder / "edge.db", clock=self.clock))
        self.order: list[str] = []  # request ids in submit order
        self.states: dict[str, RowState] = {}
        self.responses: dict[str, dict[str, Any]] = {}
        self.claimed: set[str] = set()

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        self.run(self.journal.close())
        self.loop.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _in(self, *states: RowState) -> list[str]:
        return [r for r in self.order if self.states[r] in states]

    @rule(count=st.integers(1, 5))
    def submit(self, count: int) -> None:
        async def batch() -> list[str]:
            submits = (self.journal.enqueue(Submission("t", {"n": i})) for i in range(count))
            return list(await asyncio.gather(*submits))

        for request_id in self.run(batch()):
            self.order.append(request_id)
            self.states[request_id] = RowState.QUEUED

    @precondition(lambda self: bool(self._in(*_UNANSWERED)))
    @rule(outcome=st.sampled_from(["answered", "not sent", "maybe sent"]))
    def send_the_first(self, outcome: str) -> None:
        offered = self.run(self.journal.to_send(0, 1))
        expected = self._in(*_UNANSWERED)[0]
        assert [row.request_id for row in offered] == [expected]  # lowest seq first
        was_queued = self.states[expected] == RowState.QUEUED
        assert self.run(self.journal.mark_sending(expected)) is not None
        self.states[expected] = RowState.SENDING
        if outcome == "answered":
            response = {"jsonrpc": "2.0", "id": expected, "result": {"n": len(self.responses)}}
            assert self.run(self.journal.mark_answered(expected, response))
            self.states[expected] = RowState.ANSWERED
            self.responses[expected] = response
        elif outcome == "not sent":
            self.run(self.journal.mark_not_sent(expected, was_queued=was_queued))
            self.states[expected] = RowState.QUEUED if was_queued else RowState.SENDING

    @precondition(lambda self: bool(self.order))
    @rule(index=st.integers(0, 10_000), late=st.booleans())
    def touch_a_final_or_cancel(self, index: int, late: bool) -> None:
        request_id = self.order[index % len(self.order)]
        state = self.states[request_id]
        if state.final:  # nothing moves a final row
            assert self.run(self.journal.mark_sending(request_id)) is None
            assert not self.run(self.journal.mark_answered(request_id, {"result": "late"}))
            assert not self.run(self.journal.mark_failed(request_id, 1, "late"))
        elif late:
            cancelled = self.run(self.journal.cancel(request_id))
            assert cancelled == (state == RowState.QUEUED)
            if cancelled:
                self.states[request_id] = RowState.CANCELLED

    @precondition(lambda self: bool(self._in(RowState.SENDING)))
    @rule()
    def the_horizon_passes(self) -> None:
        self.clock.now += 100
        failed = self.run(self.journal.expire(horizon_s=50))
        assert failed == self._in(RowState.SENDING)
        for request_id in failed:
            self.states[request_id] = RowState.FAILED

    @precondition(lambda self: bool(self._in(RowState.ANSWERED, RowState.FAILED)))
    @rule(index=st.integers(0, 10_000))
    def claim(self, index: int) -> None:
        finals = self._in(RowState.ANSWERED, RowState.FAILED)
        request_id = finals[index % len(finals)]
        self.run(self.journal.claim(request_id))
        self.claimed.add(request_id)

    @rule()
    def crash_and_reopen(self) -> None:
        self.run(self.journal._db.close())  # no clean close: the integrity check runs
        self.journal = self.run(Journal.open(self.folder / "edge.db", clock=self.clock))

    @invariant()
    def the_journal_agrees_with_the_model(self) -> None:
        async def rows() -> dict[str, Any]:
            return {r: await self.journal.get(r) for r in self.order}

        stored = self.run(rows())
        for request_id, row in stored.items():
            assert row is not None
            assert row.state == self.states[request_id], request_id
            if request_id in self.responses:
                assert row.response == self.responses[request_id]
        assert self.journal.unanswered == len(self._in(*_UNANSWERED))
        finals = self._in(RowState.ANSWERED, RowState.FAILED)
        unclaimed = self.run(self.journal.unclaimed(0, 10_000))
        assert [r.request_id for r in unclaimed] == [r for r in finals if r not in self.claimed]


TestJournalStates = JournalMachine.TestCase
TestJournalStates.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
