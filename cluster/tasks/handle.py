"""The Python side of tasks: start a tool as a task, follow it, fetch its outcome later.

::

    handle = await client.start_tool("risk_model", {"book": "EU"})   # returns at once
    async for step in handle.progress():                             # while it runs
        print(step.progress, step.total, step.message)
    result = await handle.result()                                   # CallToolResult
    task_id = handle.id                                              # keep it ...
    handle = await other_client.open_task(task_id)                   # ... reopen anywhere

A handle talks to the bus's task store actor directly (``raybus/<bus>/tasks``); it holds
no state of its own, so any process of the same principal can open a task by id. Each
call to the store is bounded; one that meets a store Ray is restarting is sent again,
with backoff, for up to :data:`STORE_RESTART_WAIT_S`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from ray.exceptions import ActorUnavailableError, RayActorError

from actors.tasks.inputs import InputOutcome
from actors.tasks.model import TaskRecord, TaskStatus
from transports.errors import BusErrorCode, BusTimeout, CallError, ConnectionClosed

__all__ = [
    "STORE_RESTART_WAIT_S",
    "InputOutcome",
    "Progress",
    "TaskHandle",
    "TaskState",
    "TaskStatus",
]

logger = logging.getLogger(__name__)

# How long a handle keeps asking a store that is restarting (a process start and a
# journal load: seconds, tens of seconds on a loaded 2-core machine).
STORE_RESTART_WAIT_S = 60.0
# Each long poll of the store is bounded; a loop of them waits as long as asked.
_POLL_S = 30.0
_ASK_TIMEOUT_S = _POLL_S + 30.0


@dataclass(frozen=True)
class Progress:
    progress: float
    total: float | None
    message: str | None


@dataclass(frozen=True)
class TaskState:
    """A task as the store last saw it."""

    task_id: str
    status: TaskStatus
    message: str | None
    progress: float | None
    total: float | None
    created_at: float
    updated_at: float
    ttl_s: float
    poll_interval_s: float
    attempt: int
    version: int

    @classmethod
    def of(cls, record: TaskRecord) -> TaskState:
        return cls(
            task_id=record.task_id,
            status=record.status,
            message=record.status_message,
            progress=record.progress,
            total=record.total,
            created_at=record.created_at,
            updated_at=record.updated_at,
            ttl_s=record.ttl_ms / 1000,
            poll_interval_s=record.poll_interval_ms / 1000,
            attempt=record.attempt,
            version=record.version,
        )


async def ask_store(store: Any, method: str, *args: Any) -> Any:
    """One call to the task store, sent again while Ray restarts the store.

    Raises:
        CallError: the store's own answer (unknown task, not a task tool, ...).
        ConnectionClosed: the store did not come back within STORE_RESTART_WAIT_S.
    """
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + STORE_RESTART_WAIT_S
    backoff_s = 0.2
    while True:
        try:
            async with asyncio.timeout(_ASK_TIMEOUT_S):
                return await getattr(store, method).remote(*args)
        except CallError as exc:  # Ray's wrapper is also a CallError: give the plain one
            cause = getattr(exc, "cause", exc)
            raise CallError(cause.method, cause.code, cause.message, cause.data) from None
        except (RayActorError, ActorUnavailableError, TimeoutError) as exc:
            if loop.time() >= give_up_at:
                raise ConnectionClosed(f"the bus's task store is unavailable: {exc}") from None
            logger.info("the task store did not answer (%s); asking again", exc)
        await asyncio.sleep(backoff_s)  # backoff while the store restarts, not a sync
        backoff_s = min(backoff_s * 2, 5.0)


class TaskHandle:
    """One task on a bus; from :meth:`BusClient.start_tool` or :meth:`BusClient.open_task`."""

    def __init__(self, store: Any, principal: str, record: TaskRecord) -> None:
        self._store = store
        self._principal = principal
        self._last = record

    @property
    def id(self) -> str:
        return self._last.task_id

    def __repr__(self) -> str:
        return f"TaskHandle({self.id!r}, {self._last.status})"

    async def _record(self) -> TaskRecord:
        record: TaskRecord = await ask_store(self._store, "get", self.id, self._principal)
        self._last = record
        return record

    async def _wait(self, after_version: int, timeout_s: float) -> TaskRecord:
        record: TaskRecord = await ask_store(
            self._store, "wait", self.id, self._principal, after_version, timeout_s
        )
        self._last = record
        return record

    async def status(self) -> TaskState:
        """The task now.

        Raises:
            CallError: -32602 the task is unknown, expired or another principal's.
        """
        return TaskState.of(await self._record())

    async def cancel(self) -> TaskState:
        """Cancel the task (its worker's tool is cancelled); idempotent: a task that
        already ended keeps its status. Returns the task after it."""
        record: TaskRecord = await ask_store(self._store, "cancel", self.id, self._principal)
        self._last = record
        return TaskState.of(record)

    async def input_requests(self, wait_s: float = 0.0) -> dict[str, dict[str, Any]]:
        """The tool's outstanding requests for input: key -> ``{"method", "params"}``
        (empty unless the task was started with ``answers_input``). ``wait_s``: wait up
        to that long for one while there is none and the task runs."""
        loop = asyncio.get_running_loop()
        until = loop.time() + wait_s
        record = await self._record()
        while not record.input_requests and not record.status.terminal:
            left = until - loop.time()
            if left <= 0:
                break
            record = await self._wait(record.version, min(left, _POLL_S))
        return dict(record.input_requests)

    async def respond(self, answers: Mapping[str, dict[str, Any]]) -> InputOutcome:
        """Answer outstanding requests (each value the request's result, e.g. an
        elicitation's ``{"action": "accept", "content": {...}}``); the tool goes on once
        none is left. Keys that are not outstanding are ignored (see the outcome).

        Raises:
            CallError: -32602 the task is unknown, or an answer is not an object.
        """
        outcome: InputOutcome = await ask_store(
            self._store, "respond", self.id, self._principal, dict(answers)
        )
        return outcome

    async def respond_error(
        self, key: str, *, code: int, message: str, data: object = None
    ) -> InputOutcome:
        """Answer the outstanding request ``key`` with a JSON-RPC error instead of a
        result (as an MCP client does that cannot or will not serve it, e.g. a sampling
        request with no model at hand): the tool gets the error as the request's answer.

        Raises:
            CallError: -32602 the task is unknown, or the error is malformed.
        """
        error: dict[str, object] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        outcome: InputOutcome = await ask_store(
            self._store, "fail_input", self.id, self._principal, key, error
        )
        return outcome

    async def progress(self) -> AsyncIterator[Progress]:
        """Each progress change until the task ends (coalesced: a slow reader sees the
        latest, never a backlog). Ends when the task does; never raises for its outcome
        (ask :meth:`result` for that)."""
        record = await self._record()
        seen: tuple[float | None, float | None, str | None] | None = None
        while True:
            if record.progress is not None:
                now = (record.progress, record.total, record.status_message)
                if now != seen:
                    seen = now
                    yield Progress(record.progress, record.total, record.status_message)
            if record.status.terminal:
                return
            record = await self._wait(record.version, _POLL_S)

    async def result(self, timeout_s: float | None = None) -> types.CallToolResult:
        """Wait for the task to end; its result (a tool's own failure is ``isError``).

        Raises:
            CallError: the call failed (its JSON-RPC error, e.g. 1004 when its worker
                died), or 1005 when the task was cancelled.
            BusTimeout: ``timeout_s`` passed first (the task keeps running).
        """
        loop = asyncio.get_running_loop()
        until = None if timeout_s is None else loop.time() + timeout_s
        record = await self._record()
        while not record.status.terminal:
            left = _POLL_S if until is None else min(_POLL_S, until - loop.time())
            if left <= 0:
                raise BusTimeout(f"task {self.id}", timeout_s or 0.0)
            record = await self._wait(record.version, left)
        outcome = record.outcome or {}
        if record.status is TaskStatus.CANCELLED:
            raise CallError("tools/call", BusErrorCode.CANCELLED, "the task was cancelled")
        if "error" in outcome:
            error = outcome["error"]
            raise CallError(
                "tools/call", int(error["code"]), str(error.get("message", "")), error.get("data")
            )
        return types.CallToolResult.model_validate(outcome.get("result") or {})
