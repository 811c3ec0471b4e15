"""MCP tasks at the gateway, 2026-07-28 era: the ``io.modelcontextprotocol/tasks`` extension.

Spec: ext-tasks ``specification/2026-07-28/tasks.md`` = SEP-2663 (design-21 §1.3). What
differs from 2025-11-25 (:mod:`cluster.gateway.tasks`):

* negotiation is **per request**: the request's ``_meta`` client capabilities declare
  the extension; the server then decides alone whether a ``tools/call`` becomes a task
  (every tool whose support is ``optional`` or ``required`` does). A ``required`` tool
  called by a client that did not declare it, and every ``tasks/*`` request of such a
  client, is refused with ``-32021`` and ``data.requiredCapabilities`` (checked
  before the task is looked up). The 2025 ``params.task`` is ignored (stripped).
* the created task is answered flat, ``resultType: "task"``, with ``ttlMs`` /
  ``pollIntervalMs``; ``tasks/get`` inlines the outcome (``result`` / ``error``); a
  tool's ``isError`` result is ``completed``.
* ``tasks/cancel`` and ``tasks/update`` answer an empty ack (``resultType:
  "complete"``), also for a task that already ended; ``tasks/result`` and ``tasks/list``
  do not exist (``-32601``).
* over Streamable HTTP the ``Mcp-Name`` header must carry ``params.taskId`` on
  ``tasks/get|update|cancel`` (``-32020`` otherwise): the SDK checks it for
  ``tools/call`` and the like only.

A task's tool may ask for input mid-call (the SDK's ``ctx.elicit`` and the like): the
store parks the request, ``tasks/get`` shows ``input_required`` with ``inputRequests``,
and ``tasks/update`` delivers ``inputResponses`` to the waiting worker
(:mod:`actors.tasks.inputs`). Responses for keys that are not outstanding are ignored, as
the extension asks; a response that is not an object is ``-32602``.

A pool's ``input_first`` tools gather their input before they become tasks (SEP-2663,
"Composition with Multi Round-Trip Requests"): a call without ``inputResponses`` runs
synchronously and answers the tool's ``InputRequiredResult``; the call that carries them
becomes the task, and its ``inputResponses`` / ``requestState`` and the request's
envelope go into the task's call (:func:`task_call_params`), so the tool's server sees
the round it was asked for. The task's own answer never carries the MRTR
``requestState``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_NAME_HEADER, decode_header_value
from mcp_types import HEADER_MISMATCH, MISSING_REQUIRED_CLIENT_CAPABILITY
from starlette.requests import Request

__all__ = [
    "TASKS_EXTENSION",
    "UpdateTaskRequestParams",
    "check_mcp_name",
    "declares_tasks",
    "declares_tasks_in_meta",
    "gathered_input",
    "missing_tasks_extension",
    "task_call_params",
]

Ctx = ServerRequestContext[Any, Any]

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
_CLIENT_CAPABILITIES = types.CLIENT_CAPABILITIES_META_KEY
_RESERVED_META = "io.modelcontextprotocol/"
# What of a 2026-07-28 tools/call a task's call keeps besides its name and arguments.
_MRTR_PARAMS = ("inputResponses", "requestState")


class UpdateTaskRequestParams(types.RequestParams):
    """``tasks/update`` params: the task and the client's answers to its input requests."""

    task_id: str
    input_responses: dict[str, Any] | None = None


def declares_tasks(ctx: Ctx) -> bool:
    """Did this request's client declare the tasks extension? (Per request on 2026-07-28:
    each request has its own connection, carrying its own ``_meta`` capabilities.)"""
    capabilities = ctx.session.client_capabilities
    extensions = capabilities.extensions if capabilities is not None else None
    return extensions is not None and TASKS_EXTENSION in extensions


def declares_tasks_in_meta(params: Mapping[str, Any]) -> bool:
    """The same, read from a request's raw params (the direct HTTP path has no context)."""
    meta = params.get("_meta")
    capabilities = meta.get(_CLIENT_CAPABILITIES) if isinstance(meta, dict) else None
    extensions = capabilities.get("extensions") if isinstance(capabilities, dict) else None
    return isinstance(extensions, dict) and TASKS_EXTENSION in extensions


def missing_tasks_extension(what: str) -> MCPError:
    """``-32021`` with the data shape the extension and the 2026 schema require."""
    data = types.MissingRequiredClientCapabilityErrorData(
        required_capabilities=types.ClientCapabilities(extensions={TASKS_EXTENSION: {}})
    )
    return MCPError(
        MISSING_REQUIRED_CLIENT_CAPABILITY,
        f"{what} needs the client to declare the {TASKS_EXTENSION!r} extension",
        data.model_dump(by_alias=True, mode="json", exclude_none=True),
    )


def check_mcp_name(ctx: Ctx, task_id: str) -> None:
    """Over HTTP, ``Mcp-Name`` must equal ``params.taskId``. Stdio carries no headers
    and a WebSocket's messages none of their own (its upgrade request's headers are not
    any message's): nothing to check there.

    Raises:
        MCPError: ``-32020`` (header mismatch) when it is missing or different.
    """
    if not isinstance(ctx.request, Request):
        return
    if decode_header_value(ctx.request.headers.get(MCP_NAME_HEADER)) != task_id:
        raise MCPError(
            HEADER_MISMATCH,
            f"{MCP_NAME_HEADER} header does not match the request body's 'taskId' parameter",
        )


def gathered_input(params: Mapping[str, Any]) -> bool:
    """Does this ``tools/call`` carry answers of an earlier MRTR round?"""
    return params.get("inputResponses") is not None


def task_call_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """What the task's call keeps of the client's ``tools/call``: the MRTR answers and
    state, and the request's envelope (``_meta`` protocol version, client info and
    capabilities) minus the tasks extension: the task is the gateway's, and the tool's
    server must not hand the bus a task of its own.

    Empty for a call that gathered no input: its task runs over the worker's
    handshake-era session, where a tool's mid-call requests (the SDK's ``ctx.elicit``)
    reach the task store; a 2026-07-28 request has no back channel for them.
    """
    if not gathered_input(params):
        return {}
    kept = {k: params[k] for k in _MRTR_PARAMS if params.get(k) is not None}
    meta = params.get("_meta")
    if not isinstance(meta, dict):
        return kept
    envelope = {k: v for k, v in meta.items() if k.startswith(_RESERVED_META)}
    capabilities = envelope.get(_CLIENT_CAPABILITIES)
    if isinstance(capabilities, dict) and isinstance(capabilities.get("extensions"), dict):
        extensions = {k: v for k, v in capabilities["extensions"].items() if k != TASKS_EXTENSION}
        envelope[_CLIENT_CAPABILITIES] = {**capabilities, "extensions": extensions}
    if envelope:
        kept["_meta"] = envelope
    return kept
