"""A task's input requests: what a tool asks its caller mid-call, and the answers' way back.

A tool running as a task may ask its caller for input (MCP elicitation, sampling, roots)
in the middle of its call, as the official SDK's ``ctx.elicit`` does. Its worker relays
the request to the call's ``reply_to``, the task store (``actors.worker.hosted_server``
mints the request's id and waits for an answer addressed back to the worker). The store
parks it in the task's record under a public key (``input-<n>``, never reused over the
task's life, as the 2026-07-28 tasks extension requires), so the task shows
``input_required`` with ``inputRequests`` to whoever asks, on any gateway replica and
after a store restart (the route back is journaled with the record). The caller answers
with ``tasks/update``; each answer goes to the worker that asked, and once none is
outstanding the task is ``working`` again. A 2025-11-25 caller gets the requests on its
``tasks/result`` stream instead and answers each with an ordinary JSON-RPC response
(:mod:`cluster.gateway.tasks_input`); an error response travels to the worker as the
request's error (:func:`error_frames`), so the tool's ``ctx.elicit`` raises it.

Only a task whose caller can answer (``TaskRecord.accepts_input``: a 2026-07-28 client
that declared the extension, a 2025-11-25 client that declared ``elicitation``,
``sampling`` or ``roots``) parks requests; any other task's requests are refused at
once, so its tool fails fast instead of waiting for an answer nobody can give. A parked
request waits at most until the task's run deadline (the worker bounds the call by it,
the sweeper fails the task after it); a task that ends meanwhile (cancelled, failed)
answers its parked requests with an error, so the worker forgets them.

Answers for keys that are not outstanding (never issued, already answered, or of a task
that ended) are not delivered: the store reports them, and the gateway ignores them as
the extension asks ("SHOULD ignore").

Not relayed: an MRTR ``InputRequiredResult`` as the *answer* of a task's call (a tool
that asks by returning, rather than by calling). It fails the task with
:data:`MRTR_IN_TASK` rather than completing it with a result that is none; a tool that
gathers its input that way before it becomes a task is listed under its pool's
``tasks.input_first``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from actors.tasks.model import TASK_REQUEST_CLIENT_ID, TaskRecord
from transports.envelope import Envelope
from transports.errors import METHOD_NOT_FOUND, CallError
from transports.frame import Frame
from transports.message import Request, Response

__all__ = [
    "MAX_OPEN_INPUTS",
    "MRTR_IN_TASK",
    "InputOutcome",
    "answer_frames",
    "checked_error",
    "checked_responses",
    "ended_frames",
    "error_frames",
    "input_key",
    "input_request",
    "refusal_frame",
]

# A tool that fans out more requests than this at once is refused the extra ones: the
# record (journaled on every change) must stay small.
MAX_OPEN_INPUTS = 16
MRTR_IN_TASK = (
    "the tool answered input_required (MRTR) inside a task, which the bus does not relay: "
    "ask with an elicitation call instead, or list the tool under its pool's "
    "tasks.input_first to gather input before the task starts"
)
_INVALID_PARAMS = -32602
# The answer a parked request gets when its task ended before the caller answered it.
_TASK_ENDED = -32603


@dataclass(frozen=True)
class InputOutcome:
    """What ``tasks/update`` did: the keys answered, and those ignored (not outstanding)."""

    answered: tuple[str, ...]
    ignored: tuple[str, ...]


def input_key(record: TaskRecord) -> str:
    """The public key of the task's next input request (unique over the task's life)."""
    return f"input-{record.input_count + 1}"


def input_request(request: Request) -> dict[str, Any]:
    """The request as ``inputRequests`` shows it: ``{"method", "params"}``."""
    shown: dict[str, Any] = {"method": request.method}
    if request.params is not None:
        shown["params"] = request.params
    return shown


def checked_responses(responses: object) -> dict[str, dict[str, Any]]:
    """``inputResponses`` once each answer is a JSON object (the result of the request).

    Raises:
        CallError: ``-32602`` naming the field that is not an object.
    """
    if not isinstance(responses, Mapping):
        raise CallError("tasks/update", _INVALID_PARAMS, "params.inputResponses must be an object")
    for key, value in responses.items():
        if not isinstance(value, dict):
            raise CallError(
                "tasks/update",
                _INVALID_PARAMS,
                f"params.inputResponses[{key!r}] must be an object (the request's result)",
            )
    return {str(key): value for key, value in responses.items()}


def checked_error(error: object) -> dict[str, Any]:
    """A JSON-RPC error object answering an input request: ``{code, message, data?}``.

    Raises:
        CallError: ``-32602`` naming the field that is missing or of the wrong type.
    """
    if not isinstance(error, Mapping):
        raise CallError("tasks/result", _INVALID_PARAMS, "the input's error must be an object")
    code, message = error.get("code"), error.get("message")
    if not isinstance(code, int) or isinstance(code, bool):
        raise CallError(
            "tasks/result", _INVALID_PARAMS, "the input's error.code must be an integer"
        )
    if not isinstance(message, str):
        raise CallError(
            "tasks/result", _INVALID_PARAMS, "the input's error.message must be a string"
        )
    checked: dict[str, Any] = {"code": code, "message": message}
    if error.get("data") is not None:
        checked["data"] = error["data"]
    return checked


def _answer_envelope(record: TaskRecord) -> Envelope:
    # The worker routes an answer by the body's id alone; the envelope names the call.
    return Envelope(
        client_id=TASK_REQUEST_CLIENT_ID,
        request_id=record.request_id,
        principal=record.principal,
        method="tools/call",
        name=record.tool,
    )


def answer_frames(
    record: TaskRecord, answers: Mapping[str, dict[str, Any]]
) -> list[tuple[str, Frame]]:
    """``(worker, frame)`` carrying each outstanding request's answer back to its worker."""
    return _to_workers(record, answers, Response.success)


def error_frames(
    record: TaskRecord, errors: Mapping[str, dict[str, Any]]
) -> list[tuple[str, Frame]]:
    """``(worker, frame)`` carrying the caller's error for each outstanding request."""

    def failure(request_id: str, error: dict[str, Any]) -> Response:
        return Response.failure(request_id, error["code"], error["message"], error.get("data"))

    return _to_workers(record, errors, failure)


def _to_workers(
    record: TaskRecord,
    replies: Mapping[str, dict[str, Any]],
    response: Callable[[str, dict[str, Any]], Response],
) -> list[tuple[str, Frame]]:
    """Each reply, keyed by input key, as a response to the worker that asked."""
    envelope = _answer_envelope(record)
    frames = []
    for key, reply in replies.items():
        worker, request_id = record.input_routes[key]
        frames.append((worker, Frame.of(envelope, response(request_id, reply))))
    return frames


def refusal_frame(envelope: Envelope, request: Request, message: str, *, ended: bool) -> Frame:
    """The error answering a request no caller will answer: the task ended (``-32603``),
    or its caller cannot answer (``-32601``, as a worker answers a request it has no
    client for)."""
    code = _TASK_ENDED if ended else METHOD_NOT_FOUND
    return Frame.of(envelope, Response.failure(request.id, code, message))


def ended_frames(record: TaskRecord, message: str) -> list[tuple[str, Frame]]:
    """Errors for every request still parked on ``record`` (its task is ending)."""
    envelope = _answer_envelope(record)
    return [
        (worker, Frame.of(envelope, Response.failure(request_id, _TASK_ENDED, message)))
        for worker, request_id in record.input_routes.values()
    ]
