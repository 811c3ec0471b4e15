"""What a task is: its record, its status machine, its ids, and how each MCP era shows it.

A task is one ``tools/call`` the bus runs on a caller's behalf and keeps the outcome of,
so the caller can go away and ask later (issue 21). The record is the only state: the
store (:mod:`actors.tasks.store`) changes it with :func:`transition` and journals it, and
every view below is computed from it.

Status machine (MCP 2025-11-25 ``basic/utilities/tasks``; the same diagram in the
2026-07-28 extension)::

    working <-> input_required
       |            |
       v            v
    completed | failed | cancelled      (terminal: sticky, never left)

Every change bumps ``version`` (a long-poll cursor), so waiters see each change once.
Answers carry ``<attempt>.<round>`` in their request id; an answer of an attempt or
round that is not the current one is stale and dropped (a re-run's predecessor may still
answer).

The two eras show the same record differently (design 1.4): 2025-11-25 names the TTL
``ttl``/``pollInterval``, reports a tool's ``isError`` result as ``failed`` and wraps a
created task as ``{"task": ...}``; the 2026-07-28 extension names them
``ttlMs``/``pollIntervalMs``, keeps ``isError`` results ``completed``, inlines the result
in ``tasks/get`` and answers create flat with ``resultType: "task"``.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "RELATED_TASK_META",
    "TASK_REQUEST_CLIENT_ID",
    "Answered",
    "CancelRequested",
    "DeadlinePassed",
    "Dispatched",
    "Errored",
    "InputAnswered",
    "InputAsked",
    "Progressed",
    "Refused",
    "Rerun",
    "TaskEvent",
    "TaskRecord",
    "TaskStatus",
    "call_params",
    "cancel_ack_2026",
    "create_result_2025",
    "create_result_2026",
    "iso_time",
    "new_task_id",
    "parse_request_id",
    "request_id_of",
    "result_2025",
    "transition",
    "view_2025",
    "view_2026",
]

RELATED_TASK_META = "io.modelcontextprotocol/related-task"
# The client id of every call the store submits: its answers are told apart from any
# other caller's by this, and mapped to their task by the request id alone.
TASK_REQUEST_CLIENT_ID = "tasks"
# Shard digit in front of every id: v1 has one store (shard 0); sharding by id later
# needs no change of format.
_SHARD = "0"
_STATUS_MESSAGE_CHARS = 200


class TaskStatus(StrEnum):
    WORKING = "working"
    INPUT_REQUIRED = "input_required"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


def new_task_id() -> str:
    """A fresh id: 144 random bits (unguessable, as the spec requires), URL- and
    header-safe, and free of ``.`` (request ids append ``.<attempt>.<round>``)."""
    return _SHARD + secrets.token_urlsafe(18)


def request_id_of(task_id: str, attempt: int, round_: int) -> str:
    return f"{task_id}.{attempt}.{round_}"


def parse_request_id(request_id: str) -> tuple[str, int, int] | None:
    """``(task id, attempt, round)`` of a task call's request id; None if not one."""
    parts = request_id.rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


def iso_time(unix_s: float) -> str:
    """ISO 8601 in UTC with milliseconds, as the spec's examples write them."""
    stamp = datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclass(frozen=True)
class TaskRecord:
    """Everything known about one task; JSON in the journal (:meth:`to_json`).

    Times are unix seconds (ISO only on the wire). ``outcome`` is ``{"result": ...}``
    (the tool's ``CallToolResult``, ``isError`` included) or ``{"error": ...}`` (a
    JSON-RPC error object), set once with the terminal status.
    """

    task_id: str
    principal: str
    tool: str
    arguments: dict[str, Any]
    created_at: float
    updated_at: float
    ttl_ms: int
    poll_interval_ms: int
    run_deadline: float
    max_attempts: int = 1
    rerun_lost: bool = False
    status: TaskStatus = TaskStatus.WORKING
    status_message: str | None = None
    progress: float | None = None
    total: float | None = None
    outcome: dict[str, Any] | None = None
    attempt: int = 1
    round: int = 1
    dispatched: bool = False
    cancel_requested: bool = False
    version: int = 1
    # Whether the caller can answer the tool's input requests (a 2026-07-28 client that
    # declared the tasks extension answers them with tasks/update); else they are refused.
    accepts_input: bool = False
    # Outstanding input requests: public key -> {"method", "params"} (the wire's
    # inputRequests), and where each one's answer goes: key -> [worker address, the
    # worker's id of the request]. Journaled, so a restarted store still answers them.
    input_requests: dict[str, Any] = field(default_factory=dict)
    input_routes: dict[str, list[str]] = field(default_factory=dict)
    # Keys ever minted for this task: a key is never reused over its life (the extension).
    input_count: int = 0
    # More params of the call than its arguments: a 2026-07-28 request's envelope
    # (``_meta``) and the input it gathered before it became a task (``inputResponses``,
    # ``requestState``), so the tool's server sees the call it was asked for.
    call_params: dict[str, Any] = field(default_factory=dict)

    @property
    def expires_at(self) -> float:
        return self.created_at + self.ttl_ms / 1000

    @property
    def request_id(self) -> str:
        return request_id_of(self.task_id, self.attempt, self.round)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> TaskRecord:
        data = json.loads(text)
        data["status"] = TaskStatus(data["status"])
        return cls(**data)


def call_params(record: TaskRecord) -> dict[str, Any]:
    """The params of the task's ``tools/call``; progress is always collected (its token
    is the task id itself)."""
    extra = record.call_params
    meta = extra.get("_meta")
    params = {k: v for k, v in extra.items() if k not in ("name", "arguments", "_meta")}
    return {
        **params,
        "name": record.tool,
        "arguments": record.arguments,
        "_meta": {**(meta if isinstance(meta, dict) else {}), "progressToken": record.task_id},
    }


# -- events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Progressed:
    attempt: int
    round: int
    progress: float
    total: float | None = None
    message: str | None = None


@dataclass(frozen=True)
class Answered:
    """The call's result arrived (any ``CallToolResult``, ``isError`` included)."""

    attempt: int
    round: int
    result: dict[str, Any]


@dataclass(frozen=True)
class Errored:
    """The call ended with a JSON-RPC error (the router's 1004 included)."""

    attempt: int
    round: int
    error: dict[str, Any]


@dataclass(frozen=True)
class Rerun:
    """Run the call again (its worker was lost and the tool may run twice)."""

    attempt: int
    message: str


@dataclass(frozen=True)
class Refused:
    """The bus refused the call before running it (overloaded, breaker open, draining):
    the task waits and is submitted again, as a durable job waits for capacity."""

    attempt: int
    round: int
    message: str


@dataclass(frozen=True)
class InputAsked:
    """The tool asked the caller for input (elicitation, sampling, roots) mid-call:
    ``request`` is ``{"method", "params"}``, ``route`` where its answer goes."""

    attempt: int
    round: int
    key: str
    request: dict[str, Any]
    route: tuple[str, str]


@dataclass(frozen=True)
class InputAnswered:
    """The caller answered these outstanding requests; with none left the task works on."""

    keys: frozenset[str]


@dataclass(frozen=True)
class CancelRequested:
    pass


@dataclass(frozen=True)
class DeadlinePassed:
    error: dict[str, Any]


@dataclass(frozen=True)
class Dispatched:
    pass


TaskEvent = (
    Progressed
    | Answered
    | Errored
    | Rerun
    | Refused
    | InputAsked
    | InputAnswered
    | CancelRequested
    | DeadlinePassed
    | Dispatched
)


def _current(record: TaskRecord, attempt: int, round_: int) -> bool:
    return attempt == record.attempt and round_ == record.round


def _changed(record: TaskRecord, now: float, **changes: Any) -> TaskRecord:
    return replace(record, updated_at=now, version=record.version + 1, **changes)


def _text_of(result: dict[str, Any]) -> str | None:
    for block in result.get("content") or ():
        if isinstance(block, dict) and block.get("type") == "text":
            return str(block.get("text", ""))[:_STATUS_MESSAGE_CHARS]
    return None


def transition(record: TaskRecord, event: TaskEvent, now: float) -> TaskRecord | None:
    """The record after ``event``, or None when the event changes nothing.

    None for: anything after a terminal status (sticky: a cancelled task's late answer
    is dropped), an answer or progress of a stale attempt or round, a re-run past
    ``max_attempts`` or of another attempt than the current one.
    """
    if record.status.terminal:
        return None
    match event:
        case Dispatched():
            return None if record.dispatched else _changed(record, now, dispatched=True)
        case Progressed(attempt, round_, progress, total, message):
            if not _current(record, attempt, round_) or record.status is not TaskStatus.WORKING:
                return None
            shown = message or (f"{progress:g}/{total:g}" if total is not None else f"{progress:g}")
            return _changed(record, now, progress=progress, total=total, status_message=shown[:200])
        case Answered(attempt, round_, result):
            if not _current(record, attempt, round_):
                return None
            message = _text_of(result) if result.get("isError") else None
            return _changed(
                record,
                now,
                status=TaskStatus.COMPLETED,
                status_message=message,
                outcome={"result": result},
                input_requests={},
                input_routes={},
            )
        case Errored(attempt, round_, error):
            if not _current(record, attempt, round_):
                return None
            return _changed(
                record,
                now,
                status=TaskStatus.FAILED,
                status_message=str(error.get("message", ""))[:_STATUS_MESSAGE_CHARS],
                outcome={"error": error},
                input_requests={},
                input_routes={},
            )
        case Rerun(attempt, message):
            if attempt != record.attempt or record.attempt >= record.max_attempts:
                return None
            return _changed(
                record,
                now,
                attempt=record.attempt + 1,
                round=1,
                dispatched=False,
                status=TaskStatus.WORKING,
                status_message=message,
                progress=None,
                total=None,
                input_requests={},
                input_routes={},
            )
        case Refused(attempt, round_, message):
            if not _current(record, attempt, round_):
                return None
            return _changed(record, now, dispatched=False, status_message=message[:200])
        case InputAsked(attempt, round_, key, request, route):
            if not _current(record, attempt, round_) or key in record.input_requests:
                return None
            return _changed(
                record,
                now,
                status=TaskStatus.INPUT_REQUIRED,
                status_message="waiting for input",
                input_requests={**record.input_requests, key: dict(request)},
                input_routes={**record.input_routes, key: list(route)},
                input_count=record.input_count + 1,
            )
        case InputAnswered(keys):
            answered = keys & record.input_requests.keys()
            if not answered:
                return None
            left = {k: v for k, v in record.input_requests.items() if k not in answered}
            return _changed(
                record,
                now,
                status=TaskStatus.INPUT_REQUIRED if left else TaskStatus.WORKING,
                status_message="waiting for input" if left else None,
                input_requests=left,
                input_routes={k: v for k, v in record.input_routes.items() if k in left},
            )
        case CancelRequested():
            return _changed(
                record,
                now,
                status=TaskStatus.CANCELLED,
                status_message="cancelled",
                cancel_requested=True,
                input_requests={},
                input_routes={},
            )
        case DeadlinePassed(error):
            return _changed(
                record,
                now,
                status=TaskStatus.FAILED,
                status_message=str(error.get("message", ""))[:_STATUS_MESSAGE_CHARS],
                outcome={"error": error},
                input_requests={},
                input_routes={},
            )


# -- era views -------------------------------------------------------------------------


def _is_error_result(record: TaskRecord) -> bool:
    outcome = record.outcome or {}
    result = outcome.get("result")
    return isinstance(result, dict) and bool(result.get("isError"))


def view_2025(record: TaskRecord) -> dict[str, Any]:
    """The 2025-11-25 ``Task`` (``tasks/get`` result, ``notifications/tasks/status``).

    A tool's ``isError`` result is ``failed`` in this era ("this includes cases where
    the tool call result has isError set to true").
    """
    status = record.status
    if status is TaskStatus.COMPLETED and _is_error_result(record):
        status = TaskStatus.FAILED
    view: dict[str, Any] = {
        "taskId": record.task_id,
        "status": str(status),
        "createdAt": iso_time(record.created_at),
        "lastUpdatedAt": iso_time(record.updated_at),
        "ttl": record.ttl_ms,
        "pollInterval": record.poll_interval_ms,
    }
    if record.status_message:
        view["statusMessage"] = record.status_message
    return view


def create_result_2025(record: TaskRecord) -> dict[str, Any]:
    return {"task": view_2025(record)}


def result_2025(record: TaskRecord) -> dict[str, Any]:
    """What ``tasks/result`` answers for a terminal task: the call's own result with the
    related-task ``_meta``, or ``{"error": ...}`` (the JSON-RPC error to answer with).

    Raises:
        ValueError: the task is not terminal (the caller must wait first).
    """
    if not record.status.terminal:
        raise ValueError(f"task {record.task_id} is still {record.status}")
    related = {RELATED_TASK_META: {"taskId": record.task_id}}
    outcome = record.outcome or {}
    if "result" in outcome:
        result = dict(outcome["result"])
        result["_meta"] = {**(result.get("_meta") or {}), **related}
        return result
    if "error" in outcome:
        return {"error": outcome["error"]}
    return {"error": {"code": -32800, "message": "the task was cancelled", "data": related}}


def _task_fields_2026(record: TaskRecord) -> dict[str, Any]:
    view: dict[str, Any] = {
        "taskId": record.task_id,
        "status": str(record.status),
        "createdAt": iso_time(record.created_at),
        "lastUpdatedAt": iso_time(record.updated_at),
        "ttlMs": record.ttl_ms,
        "pollIntervalMs": record.poll_interval_ms,
    }
    if record.status_message:
        view["statusMessage"] = record.status_message
    return view


def create_result_2026(record: TaskRecord) -> dict[str, Any]:
    """The extension's flat ``CreateTaskResult`` (never ``result``/``error`` in it)."""
    return {"resultType": "task", **_task_fields_2026(record)}


def view_2026(record: TaskRecord) -> dict[str, Any]:
    """The extension's ``tasks/get`` result (``DetailedTask``, ``resultType: complete``).

    ``completed`` inlines the result without related-task ``_meta``; ``failed`` the
    error only; ``input_required`` every outstanding request.
    """
    view: dict[str, Any] = {"resultType": "complete", **_task_fields_2026(record)}
    outcome = record.outcome or {}
    if record.status is TaskStatus.COMPLETED and "result" in outcome:
        result = dict(outcome["result"])
        meta = {k: v for k, v in (result.get("_meta") or {}).items() if k != RELATED_TASK_META}
        result.pop("_meta", None)
        if meta:
            result["_meta"] = meta
        view["result"] = result
    elif record.status is TaskStatus.FAILED and "error" in outcome:
        view["error"] = outcome["error"]
    elif record.status is TaskStatus.INPUT_REQUIRED:
        view["inputRequests"] = dict(record.input_requests)
    return view


def cancel_ack_2026() -> dict[str, Any]:
    return {"resultType": "complete"}
