"""The task store's core: creates tasks, runs their calls on the bus, keeps their outcome.

No Ray here (like :mod:`actors.router.core`): the Ray shell
(``cluster/ray_actors/task_store.py``) gives it ports and a clock.

* **Create** journals the record *before* returning it, so an id anyone learns resolves,
  even from a store restarted a moment later; then it submits the call.
* **The store is the call's caller**: it submits ``tools/call`` with ``client_id
  "tasks"``, ``request_id "<taskId>.<attempt>.<round>"`` and ``reply_to`` = its own
  address, so any incarnation of the store maps an answer or a progress notification to
  its task from the envelope alone. Answers of an older attempt or round are dropped.
* **Never left working**: the router's ``1004`` (the worker died) re-runs the call when
  the task allows it and attempts remain, else fails the task; refusals before any worker
  ran it (``1002``/``1003``/``1006``) submit it again later; the sweeper (:meth:`tick`)
  fails whatever is still running past its run deadline (plus a grace) and cancels it
  on the bus. Cancellation marks the task ``cancelled`` at once (sticky) and withdraws the
  call.
* **Input mid-call**: a tool's request to its caller (elicitation, sampling) is parked
  in the record (``input_required``) and answered by :meth:`TaskStoreCore.respond`, or
  by :meth:`TaskStoreCore.fail_input` with an error; see :mod:`actors.tasks.inputs`.
* **TTL**: a task is deleted once ``createdAt + ttl`` passed (never before its run could
  have ended: the TTL is at least the run timeout plus a minute).

Operations on tasks take the caller's principal: a task of another principal, an
expired one and an unknown one are indistinguishable (``-32602``), as the spec requires.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from actors.tasks.feed import ChangeFeed
from actors.tasks.inputs import (
    MAX_OPEN_INPUTS,
    MRTR_IN_TASK,
    InputOutcome,
    answer_frames,
    checked_error,
    checked_responses,
    ended_frames,
    error_frames,
    input_key,
    input_request,
    refusal_frame,
)
from actors.tasks.journal import Journal
from actors.tasks.model import (
    TASK_REQUEST_CLIENT_ID,
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
    call_params,
    new_task_id,
    parse_request_id,
    transition,
)
from actors.tasks.spec import TaskSettings, TaskSpec, TaskStorePorts
from transports.envelope import CorrelationKey, Envelope
from transports.errors import INTERNAL_ERROR, BusErrorCode, CallError
from transports.frame import Frame
from transports.message import Notification, Request

__all__ = ["TaskStoreCore"]

logger = logging.getLogger(__name__)

INVALID_PARAMS = -32602
NOT_FOUND_MESSAGE = "Failed to retrieve task: Task not found"
# Refusals that mean "not run; try later": a task is a durable job, it waits for capacity.
_TRY_LATER = frozenset(
    {BusErrorCode.OVERLOADED, BusErrorCode.CIRCUIT_OPEN, BusErrorCode.SHUTTING_DOWN}
)


class TaskStoreCore:
    def __init__(
        self,
        ports: TaskStorePorts,
        journal: Journal,
        settings: TaskSettings,
        *,
        clock: Callable[[], float],
    ) -> None:
        self._ports = ports
        self._journal = journal
        self.settings = settings
        self._clock = clock
        self._records: dict[str, TaskRecord] = {}
        self._changes: dict[str, asyncio.Event] = {}
        self._write_locks: dict[str, asyncio.Lock] = {}
        self._persisted_at: dict[str, float] = {}
        self._unwritten: set[str] = set()
        self._resubmit_at: dict[str, float] = {}
        # Status changes, for the gateways' status notifications (actors.tasks.feed).
        self.feed = ChangeFeed()

    # -- lifecycle ---------------------------------------------------------------------

    async def load(self) -> int:
        """Adopt the journal's records (a restart); submit those never submitted.

        Returns how many tasks were loaded. Calls submitted by the previous incarnation
        keep running: their answers come to this one by address.
        """
        now = self._clock()
        loaded = 0
        for record in await self._journal.load():
            if now >= record.expires_at:
                await self._journal.delete(record.task_id)
                continue
            self._records[record.task_id] = record
            self.feed.note(None, record)
            loaded += 1
            if not record.status.terminal and not record.dispatched:
                await self._dispatch(record.task_id)
        logger.info("task store loaded %d task(s)", loaded)
        return loaded

    # -- operations --------------------------------------------------------------------

    async def create(self, spec: TaskSpec) -> TaskRecord:
        """Journal a new task, then submit its call; returns the record.

        Raises:
            CallError: too many open tasks (bus-wide or for this principal).
        """
        open_tasks = [r for r in self._records.values() if not r.status.terminal]
        if len(open_tasks) >= self.settings.max_open_tasks:
            raise CallError(
                "tools/call",
                BusErrorCode.OVERLOADED,
                f"the task store holds {len(open_tasks)} open tasks (max_open_tasks)",
            )
        own = sum(1 for r in open_tasks if r.principal == spec.principal)
        if own >= self.settings.max_open_per_principal:
            raise CallError(
                "tools/call",
                BusErrorCode.OVERLOADED,
                f"{own} open tasks for this principal (max_open_per_principal)",
            )
        now = self._clock()
        settings = self.settings
        requested_s = spec.ttl_s if spec.ttl_s is not None else settings.ttl_s
        # Never shorter than the run can take: a running task is never purged.
        ttl_s = max(min(requested_s, settings.max_ttl_s), spec.run_timeout_s + 60.0)
        record = TaskRecord(
            task_id=new_task_id(),
            principal=spec.principal,
            tool=spec.tool,
            arguments=dict(spec.arguments),
            created_at=now,
            updated_at=now,
            ttl_ms=int(ttl_s * 1000),
            poll_interval_ms=settings.poll_interval_ms,
            run_deadline=now + spec.run_timeout_s,
            max_attempts=spec.max_attempts,
            rerun_lost=spec.rerun_lost,
            accepts_input=spec.accepts_input,
            call_params=dict(spec.call_params),
        )
        self._records[record.task_id] = record
        await self._persist(record.task_id)
        logger.info("task %s created: %s for %s", record.task_id, spec.tool, spec.principal)
        await self._dispatch(record.task_id)
        return self._records[record.task_id]

    def get(self, task_id: str, principal: str) -> TaskRecord | None:
        """The task, or None if unknown, expired or another principal's."""
        record = self._records.get(task_id)
        if record is None or record.principal != principal:
            return None
        if self._clock() >= record.expires_at:
            return None
        return record

    def require(self, task_id: str, principal: str, method: str) -> TaskRecord:
        """:meth:`get`, raising the spec's ``-32602`` for a task it cannot see."""
        record = self.get(task_id, principal)
        if record is None:
            raise CallError(method, INVALID_PARAMS, NOT_FOUND_MESSAGE)
        return record

    async def wait(
        self, task_id: str, principal: str, after_version: int, timeout_s: float
    ) -> TaskRecord:
        """The task once its version passes ``after_version``, or as it is at the timeout.

        Raises:
            CallError: ``-32602`` for a task the caller cannot see (or that expired).
        """
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    record = self.require(task_id, principal, "tasks/get")
                    if record.version > after_version:
                        return record
                    await self._change_of(task_id).wait()
        except TimeoutError:
            return self.require(task_id, principal, "tasks/get")

    async def cancel(self, task_id: str, principal: str) -> TaskRecord:
        """Mark the task cancelled (journaled) and withdraw its call; a terminal task is
        returned unchanged (the caller answers as its era says).

        Raises:
            CallError: ``-32602`` for a task the caller cannot see.
        """
        record = self.require(task_id, principal, "tasks/cancel")
        if record.status.terminal:
            return record
        dispatched = record.dispatched
        self._end_inputs(record, "the task was cancelled")
        self._apply(task_id, CancelRequested())
        self._resubmit_at.pop(task_id, None)
        await self._persist(task_id)
        if dispatched:
            self._ports.cancel([self._key_of(record)])
        logger.info("task %s cancelled by %s", task_id, principal)
        return self._records[task_id]

    async def respond(self, task_id: str, principal: str, responses: object) -> InputOutcome:
        """Deliver the caller's answers (``tasks/update``'s ``inputResponses``) to the
        workers waiting for them; keys that are not outstanding are ignored and reported.
        Raises ``CallError`` ``-32602`` for a task the caller cannot see, or an answer
        that is not an object."""
        record = self.require(task_id, principal, "tasks/update")
        answers = checked_responses(responses)
        outstanding = {k: v for k, v in answers.items() if k in record.input_requests}
        ignored = tuple(sorted(k for k in answers if k not in outstanding))
        if outstanding:
            await self._answered(task_id, answer_frames(record, outstanding), outstanding)
        return InputOutcome(tuple(sorted(outstanding)), ignored)

    async def fail_input(
        self, task_id: str, principal: str, key: str, error: object
    ) -> InputOutcome:
        """:meth:`respond` with a JSON-RPC error (a 2025-11-25 client declined ``key``):
        the worker gets it as the request's answer. Raises ``CallError`` as it does."""
        record, checked = self.require(task_id, principal, "tasks/result"), checked_error(error)
        if key not in record.input_requests:
            return InputOutcome((), (key,))
        await self._answered(task_id, error_frames(record, {key: checked}), {key})
        return InputOutcome((key,), ())

    async def _answered(
        self, task_id: str, sent: list[tuple[str, Frame]], keys: Iterable[str]
    ) -> None:
        for worker, frame in sent:
            self._ports.answer(worker, frame)
        self._apply(task_id, InputAnswered(frozenset(keys)))
        await self._persist(task_id)
        logger.info("task %s: input(s) %s answered", task_id, ", ".join(sorted(keys)))

    def list_tasks(self, principal: str) -> list[TaskRecord]:
        """The principal's live tasks, newest first."""
        now = self._clock()
        own = [r for r in self._records.values() if r.principal == principal and now < r.expires_at]
        return sorted(own, key=lambda r: (r.created_at, r.task_id), reverse=True)

    def counts(self) -> dict[str, int]:
        """How many tasks the store holds, by status."""
        counts = {str(status): 0 for status in TaskStatus}
        for record in self._records.values():
            counts[str(record.status)] += 1
        return counts

    # -- answers from the bus ----------------------------------------------------------

    async def on_frame(self, frame: Frame) -> None:
        """An answer, notification or server request addressed to the store."""
        envelope = frame.envelope
        parsed = parse_request_id(envelope.request_id)
        if envelope.client_id != TASK_REQUEST_CLIENT_ID or parsed is None:
            logger.debug("dropped a frame for no task: %s", envelope.correlation_key)
            return
        task_id, attempt, round_ = parsed
        message = frame.decode()
        if isinstance(message, Request):
            await self._on_input_request(task_id, attempt, round_, envelope, message)
            return
        if task_id not in self._records:
            return  # expired, or of a bus that was stopped meanwhile
        if isinstance(message, Notification):
            if message.method == "notifications/progress" and isinstance(message.params, dict):
                await self._on_progress(task_id, attempt, round_, message.params)
            return
        if message.error is not None:
            await self._on_error(task_id, attempt, round_, message.error.to_json_dict())
            return
        await self._on_result(task_id, attempt, round_, message.result)

    async def fail_call(self, frame: Frame, error: dict[str, Any]) -> None:
        """A call the store submitted could not be handed to the bus: as if answered
        with ``error`` (a try-later code is submitted again, until the run deadline)."""
        parsed = parse_request_id(frame.envelope.request_id)
        if parsed is not None and parsed[0] in self._records:
            await self._on_error(*parsed, error)

    async def calls_lost(self, request_ids: list[str], message: str) -> None:
        """Calls the bus lost (their router died holding them): the lost-worker rule,
        run again if allowed, else failed with 1004 ("may have run")."""
        error = {"code": int(BusErrorCode.OUTCOME_UNKNOWN), "message": message}
        for request_id in request_ids:
            parsed = parse_request_id(request_id)
            if parsed is not None and self.is_current(request_id):
                await self._on_error(*parsed, error)

    def is_current(self, request_id: str) -> bool:
        """Is this the request id of a running task's current call?"""
        parsed = parse_request_id(request_id)
        record = self._records.get(parsed[0]) if parsed is not None else None
        return record is not None and not record.status.terminal and record.request_id == request_id

    async def _on_progress(
        self, task_id: str, attempt: int, round_: int, params: dict[str, Any]
    ) -> None:
        progress = params.get("progress")
        if not isinstance(progress, int | float):
            return
        total = params.get("total")
        message = params.get("message")
        event = Progressed(
            attempt,
            round_,
            float(progress),
            float(total) if isinstance(total, int | float) else None,
            message if isinstance(message, str) else None,
        )
        if self._apply(task_id, event) is None:
            return
        # Progress is kept at most once a second: a restart loses at most that much.
        if self._clock() - self._persisted_at.get(task_id, 0.0) >= self.settings.progress_persist_s:
            await self._persist(task_id)
        else:
            self._unwritten.add(task_id)

    async def _on_result(self, task_id: str, attempt: int, round_: int, result: Any) -> None:
        if not isinstance(result, dict) or result.get("resultType") == "input_required":
            # An MRTR round inside a task's call is not relayed (see actors.tasks.inputs).
            message = "not an object" if not isinstance(result, dict) else MRTR_IN_TASK
            error = {"code": INTERNAL_ERROR, "message": message}
            await self._on_error(task_id, attempt, round_, error)
            return
        size = len(json.dumps(result, separators=(",", ":")))
        if size > self.settings.max_result_bytes:
            limit = self.settings.max_result_bytes
            message = f"result too large for the task store ({size} bytes > {limit})"
            await self._on_error(
                task_id, attempt, round_, {"code": INTERNAL_ERROR, "message": message}
            )
            return
        if self._apply(task_id, Answered(attempt, round_, result)) is not None:
            await self._persist(task_id)
            logger.info("task %s completed", task_id)

    async def _on_error(
        self, task_id: str, attempt: int, round_: int, error: dict[str, Any]
    ) -> None:
        record = self._records[task_id]
        code = error.get("code")
        current = attempt == record.attempt and round_ == record.round
        if current and code in _TRY_LATER and self._clock() < record.run_deadline:
            message = f"waiting for capacity: {error.get('message', '')}"
            if self._apply(task_id, Refused(attempt, round_, message)) is not None:
                data = error.get("data")
                hint = data.get("retryAfterSeconds") if isinstance(data, dict) else None
                delay = max(float(hint or 0.0), self.settings.retry_backoff_s)
                self._resubmit_at[task_id] = self._clock() + delay
                await self._persist(task_id)
            return
        lost = code == BusErrorCode.OUTCOME_UNKNOWN
        if current and lost and record.rerun_lost and record.attempt < record.max_attempts:
            message = f"worker lost; running again (attempt {record.attempt + 1})"
            if self._apply(task_id, Rerun(attempt, message)) is not None:
                logger.warning("task %s: %s", task_id, message)
                await self._persist(task_id)
                await self._dispatch(task_id)
            return
        if self._apply(task_id, Errored(attempt, round_, error)) is not None:
            await self._persist(task_id)
            logger.info("task %s failed: %s", task_id, error.get("message"))

    async def _on_input_request(
        self, task_id: str, attempt: int, round_: int, envelope: Envelope, request: Request
    ) -> None:
        """A tool asks its caller for input mid-call (see :mod:`actors.tasks.inputs`)."""
        worker = envelope.reply_to
        if worker is None or not isinstance(request.id, str):
            return  # nowhere to answer: the worker mints string ids and says where it is
        record = self._records.get(task_id)
        if record is None or not self.is_current(envelope.request_id):
            refusal, ended = "the task is no longer running", True
        elif not record.accepts_input:
            refusal, ended = (
                f"{request.method} has no caller to answer it: only a task of a client "
                "declaring the tasks extension (2026-07-28) or elicitation, sampling or roots "
                "(2025-11-25), or of start_tool(..., answers_input=True), relays its requests",
                False,
            )
        elif len(record.input_requests) >= MAX_OPEN_INPUTS:
            refusal, ended = f"the task already waits for {MAX_OPEN_INPUTS} inputs", True
        else:
            refusal, ended = "", False
        if record is None or refusal:
            self._ports.answer(worker, refusal_frame(envelope, request, refusal, ended=ended))
            return
        key = input_key(record)
        asked = InputAsked(attempt, round_, key, input_request(request), (worker, request.id))
        # Journaled before a waiter sees it: a caller answering it right away must find
        # it (and its way back to the worker) in a store restarted meanwhile.
        if self._apply(task_id, asked, wake=False) is not None:
            await self._persist(task_id)
            self._wake(task_id)
            logger.info("task %s waits for input %s (%s)", task_id, key, request.method)

    def _end_inputs(self, record: TaskRecord, message: str) -> None:
        for worker, frame in ended_frames(record, message):
            self._ports.answer(worker, frame)

    # -- the sweeper -------------------------------------------------------------------

    async def tick(self) -> None:
        """Fail overdue tasks, delete expired ones, resubmit refused ones, write progress."""
        now = self._clock()
        for task_id, record in list(self._records.items()):
            if now >= record.expires_at:
                await self._expire(task_id)
            elif (
                not record.status.terminal
                and now > record.run_deadline + self.settings.deadline_grace_s
            ):
                await self._overdue(task_id)
        for task_id, at in list(self._resubmit_at.items()):
            if now >= at:
                del self._resubmit_at[task_id]
                await self._dispatch(task_id)
        for task_id in list(self._unwritten):
            await self._persist(task_id)

    async def _overdue(self, task_id: str) -> None:
        record = self._records[task_id]
        run_s = round(record.run_deadline - record.created_at)
        error = {
            "code": int(BusErrorCode.DEADLINE_EXCEEDED),
            "message": f"task ran past its run deadline ({run_s} s); cancelled",
        }
        if self._apply(task_id, DeadlinePassed(error)) is None:
            return
        self._end_inputs(record, str(error["message"]))
        self._resubmit_at.pop(task_id, None)
        await self._persist(task_id)
        if record.dispatched:
            self._ports.cancel([self._key_of(record)])
        logger.warning("task %s %s", task_id, error["message"])

    async def _expire(self, task_id: str) -> None:
        record = self._records.pop(task_id)
        self._resubmit_at.pop(task_id, None)
        self._unwritten.discard(task_id)
        self._persisted_at.pop(task_id, None)
        if not record.status.terminal and record.dispatched:
            self._ports.cancel([self._key_of(record)])
        async with self._lock_of(task_id):
            await self._journal.delete(task_id)
        self._write_locks.pop(task_id, None)
        self._wake(task_id)  # waiters see it gone
        logger.info("task %s expired (%s)", task_id, record.status)

    # -- internals ---------------------------------------------------------------------

    def _apply(self, task_id: str, event: TaskEvent, *, wake: bool = True) -> TaskRecord | None:
        record = self._records.get(task_id)
        if record is None:
            return None
        changed = transition(record, event, self._clock())
        if changed is None:
            logger.debug("task %s: %s changes nothing", task_id, type(event).__name__)
            return None
        self._records[task_id] = changed
        self.feed.note(record, changed)
        if wake:
            self._wake(task_id)
        return changed

    async def _dispatch(self, task_id: str) -> None:
        record = self._records.get(task_id)
        if record is None or record.status.terminal:
            return
        self._ports.submit([self._call_frame(record)])
        if self._apply(task_id, Dispatched()) is not None:
            await self._persist(task_id)

    def _call_frame(self, record: TaskRecord) -> Frame:
        request_id = record.request_id
        envelope = Envelope(
            client_id=TASK_REQUEST_CLIENT_ID,
            request_id=request_id,
            principal=record.principal,
            reply_to=self._ports.address,
            deadline_unix_s=record.run_deadline,
            method="tools/call",
            name=record.tool,
            attributes=(("task", record.task_id),),
        )
        request = Request(id=request_id, method="tools/call", params=call_params(record))
        return Frame.of(envelope, request)

    def _key_of(self, record: TaskRecord) -> CorrelationKey:
        return (record.principal, TASK_REQUEST_CLIENT_ID, record.request_id)

    async def _persist(self, task_id: str) -> None:
        # One write at a time per task, each of the record as it is when the write
        # starts: the journal never ends on an older version than memory.
        async with self._lock_of(task_id):
            record = self._records.get(task_id)
            if record is None:
                return
            self._unwritten.discard(task_id)
            self._persisted_at[task_id] = self._clock()
            await self._journal.put(record)

    def _lock_of(self, task_id: str) -> asyncio.Lock:
        lock = self._write_locks.get(task_id)
        if lock is None:
            lock = self._write_locks[task_id] = asyncio.Lock()
        return lock

    def _change_of(self, task_id: str) -> asyncio.Event:
        event = self._changes.get(task_id)
        if event is None:
            event = self._changes[task_id] = asyncio.Event()
        return event

    def _wake(self, task_id: str) -> None:
        event = self._changes.pop(task_id, None)
        if event is not None:
            event.set()
