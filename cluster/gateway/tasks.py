"""MCP tasks at the gateway: the 2025-11-25 task wire, and what both eras share.

This module holds the store port, each tool's task support, the capabilities, the
``tools/call`` decision and the ``tasks/*`` handlers of both eras; the 2026-07-28
extension's own rules (negotiation, ``-32021``, ``Mcp-Name``) are in
:mod:`cluster.gateway.tasks_modern`. What follows is the 2025-11-25 wire.

Spec: ``basic/utilities/tasks`` of 2025-11-25 (design-21 §1.2). The gateway holds no
task state: every task lives in the bus's task store (the one ``BusClient.start_tool``
uses), reached through a :class:`TaskStorePort`, so any replica answers any task.

* **Capability**: ``tasks{cancel, requests.tools.call}`` in the ``initialize`` result once
  some tool of the bus supports tasks; ``tasks.list`` only when the gateway
  authenticates its callers (the spec: receivers that cannot identify requestors SHOULD
  NOT declare it, since every anonymous caller would share one list).
* **Tool-level negotiation** (``tools/list`` ``execution.taskSupport``: the pool's
  ``tasks.tools``, else the server's own declaration, else ``forbidden``):
  ``params.task`` on a ``forbidden`` tool and a call without it of a ``required`` tool
  are refused with ``-32601``, naming the task mode. Without the capability,
  ``params.task`` is ignored (the request is processed normally, as the spec requires).
* **Create** answers ``CreateTaskResult`` (``{"task": Task}``) as soon as the store has
  journaled the task; the tool runs on the bus meanwhile. The answer is returned by a
  server middleware that short-circuits the SDK's handler: the SDK would sieve it as a
  ``CallToolResult`` and answer ``-32603`` (design §1.5).
* ``tasks/get`` and ``tasks/cancel`` answer the ``Task``; ``tasks/result`` blocks until
  the task ends, then answers exactly what the call would have (its result with the
  related-task ``_meta``, or its JSON-RPC error); ``tasks/cancel`` of a task that already
  ended is ``-32602``.
* **Binding**: every task belongs to the gateway principal that created it (token or
  OAuth subject; ``anonymous`` without authentication, where the unguessable 144-bit id
  is the only protection). A task of another principal answers ``-32602`` "task not
  found", exactly as an unknown or expired id does.

2026-07-28 requests get the ``io.modelcontextprotocol/tasks`` extension instead: the
same store and handlers, the era's views (``actors.tasks.model.view_2026``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from actors.discovery.catalog import Catalog
from actors.tasks.inputs import InputOutcome
from actors.tasks.model import (
    TaskRecord,
    TaskStatus,
    cancel_ack_2026,
    create_result_2025,
    create_result_2026,
    result_2025,
    view_2025,
    view_2026,
)
from cluster.gateway.policy.chain import principal_of
from cluster.gateway.results import shaped_result
from cluster.gateway.tasks_input import TaskInputRelay, client_answers_input
from cluster.gateway.tasks_modern import (
    TASKS_EXTENSION,
    UpdateTaskRequestParams,
    check_mcp_name,
    declares_tasks,
    gathered_input,
    missing_tasks_extension,
    task_call_params,
)
from cluster.tasks.settings import PoolTasksConfig, TaskSupport, task_support
from transports.errors import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    BusErrorCode,
    CallError,
    ConnectionClosed,
)

__all__ = ["GatewayTasks", "TaskStorePort", "TasksMiddleware", "TasksServer"]

Ctx = ServerRequestContext[Any, Any]
Catalogs = Callable[[], Awaitable[dict[str, Catalog]]]

_LIST_PAGE = 50


class TaskStorePort(Protocol):
    """The bus's task store, every operation on behalf of ``principal``.

    Every method raises ``CallError`` with the store's answer (``-32602`` for a task the
    principal cannot see; ``-32601`` / ``-32602`` when the tool cannot run as a task;
    ``1002`` too many open tasks) and ``ConnectionClosed`` when the store is gone.
    """

    async def create(
        self,
        principal: str,
        tool: str,
        arguments: dict[str, Any],
        ttl_s: float | None,
        accepts_input: bool = False,
        call_params: dict[str, Any] | None = None,
    ) -> TaskRecord: ...

    async def respond(self, task_id: str, principal: str, responses: object) -> InputOutcome: ...

    async def fail_input(
        self, task_id: str, principal: str, key: str, error: object
    ) -> InputOutcome: ...

    async def get(self, task_id: str, principal: str) -> TaskRecord: ...

    async def wait(
        self, task_id: str, principal: str, after_version: int, timeout_s: float
    ) -> TaskRecord: ...

    async def cancel(self, task_id: str, principal: str) -> TaskRecord: ...

    async def list_tasks(self, principal: str) -> list[TaskRecord]: ...


def _legacy(ctx: Ctx) -> bool:
    return ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS


def _mcp_error(exc: CallError | ConnectionClosed) -> MCPError:
    if isinstance(exc, CallError):
        return MCPError(exc.code, exc.message, exc.data)
    return MCPError(BusErrorCode.SHUTTING_DOWN, str(exc))


class GatewayTasks:
    """What the gateway knows about tasks: the store, and each tool's task support.

    Args:
        store: the bus's task store.
        pools: each pool's ``tasks`` section (None: the pool names no task tool).
        authenticated: whether the gateway identifies its callers (tokens or OAuth);
            ``tasks/list`` is served and declared only then.
        configured: whether the bus's configuration names a task tool (the capability
            is then declared before any catalog was read).
    """

    def __init__(
        self,
        store: TaskStorePort,
        pools: Mapping[str, PoolTasksConfig | None],
        *,
        authenticated: bool,
        configured: bool,
    ) -> None:
        self.store = store
        self.authenticated = authenticated
        self._pools = dict(pools)
        self._configured = configured
        self._catalogs: Catalogs | None = None
        self._support: tuple[object, dict[str, TaskSupport]] = (None, {})
        self._input_first: frozenset[str] = frozenset()
        # 2025-11-25: a tool's input requests travel on tasks/result (tasks_input).
        self.inputs = TaskInputRelay()

    def support_map(self, catalogs: dict[str, Catalog]) -> dict[str, TaskSupport]:
        """Each tool's effective task support; the first pool (by name) offering a tool
        decides, as the store does when it creates the task."""
        if self._support[0] is not catalogs:
            support: dict[str, TaskSupport] = {}
            input_first: set[str] = set()
            for pool, catalog in sorted(catalogs.items()):
                config = self._pools.get(pool)
                for tool in catalog.tools:
                    name = str(tool.get("name", ""))
                    if name not in support:
                        support[name] = task_support(config, tool)
                        if config is not None and name in config.input_first:
                            input_first.add(name)
            self._support = (catalogs, support)
            self._input_first = frozenset(input_first)
        return self._support[1]

    async def support_of(self, tool: str) -> TaskSupport | None:
        """A tool's task support; None for a tool no pool offers."""
        if self._catalogs is None:
            return None
        return self.support_map(await self._catalogs()).get(tool)

    async def refresh(self) -> None:
        """Read the catalogs, so that :meth:`declared` (synchronous) is current."""
        if self._catalogs is not None:
            self.support_map(await self._catalogs())

    def declared(self) -> bool:
        """Does the gateway declare the ``tasks`` capability (some tool supports tasks)?"""
        return self._configured or any(s != "forbidden" for s in self._support[1].values())

    def capability(self) -> types.ServerTasksCapability:
        return types.ServerTasksCapability(
            list=types.TasksListCapability() if self.authenticated else None,
            cancel=types.TasksCancelCapability(),
            requests=types.ServerTasksRequestsCapability(
                tools=types.TasksToolsCapability(call=types.TasksCallCapability())
            ),
        )

    def listed_tool(self, tool: dict[str, Any], catalogs: dict[str, Catalog]) -> dict[str, Any]:
        """``tool`` as ``tools/list`` shows it: ``execution.taskSupport`` is the gateway's
        effective support (a server's own declaration may be narrowed by its pool)."""
        support = self.support_map(catalogs).get(str(tool.get("name", "")), "forbidden")
        execution = tool.get("execution")
        shown = dict(execution) if isinstance(execution, dict) else {}
        if support == "forbidden":
            shown.pop("taskSupport", None)
        else:
            shown["taskSupport"] = support
        listed = {k: v for k, v in tool.items() if k != "execution"}
        if shown:
            listed["execution"] = shown
        return listed

    async def call_2026(
        self, principal: str, params: Mapping[str, Any], declared: bool
    ) -> dict[str, Any] | None:
        """A 2026-07-28 ``tools/call``: the flat ``CreateTaskResult`` when it becomes a
        task, None when it runs synchronously (the caller strips ``params.task``).

        Raises:
            MCPError: ``-32021`` a ``required`` tool for a client that did not declare
                the extension; the store's refusal.
        """
        name = params.get("name")
        if not isinstance(name, str):
            return None
        support = await self.support_of(name)  # reads the catalogs: declared() is current
        if support is None or support == "forbidden" or not self.declared():
            return None
        if not declared:
            if support == "required":
                raise missing_tasks_extension(f"tool {name!r} runs only as a task: it")
            return None
        if name in self._input_first and not gathered_input(params):
            return None  # it asks for its input synchronously first (MRTR), then the task
        # "The server is the sole decider": every task-capable tool runs as a task. The
        # client answers the tool's input requests with tasks/update.
        record = await self.create_task(
            principal, name, params, None, accepts_input=True, call_params=task_call_params(params)
        )
        return create_result_2026(record)

    async def create_task(
        self,
        principal: str,
        name: str,
        params: Mapping[str, Any],
        ttl_s: float | None,
        *,
        accepts_input: bool = False,
        call_params: dict[str, Any] | None = None,
    ) -> TaskRecord:
        """Start the call ``params`` describes as a task of ``principal``.

        Raises:
            MCPError: ``params.arguments`` is not an object; the store's refusal.
        """
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise MCPError(INVALID_PARAMS, "params.arguments must be an object")
        try:
            return await self.store.create(
                principal, name, arguments, ttl_s, accepts_input, call_params or {}
            )
        except (CallError, ConnectionClosed) as exc:
            raise _mcp_error(exc) from None

    def attach(self, server: Server[Any], catalogs: Catalogs) -> TasksMiddleware:
        """Register the ``tasks/*`` handlers on ``server``; the middleware to put after
        the policy chain (it turns task-augmented ``tools/call`` into tasks)."""
        self._catalogs = catalogs
        handlers = _Handlers(self)
        server.add_request_handler("tasks/get", types.GetTaskRequestParams, handlers.get)
        server.add_request_handler(
            "tasks/result", types.GetTaskPayloadRequestParams, handlers.result
        )
        server.add_request_handler("tasks/cancel", types.CancelTaskRequestParams, handlers.cancel)
        server.add_request_handler("tasks/update", UpdateTaskRequestParams, handlers.update)
        if self.authenticated:
            server.add_request_handler(
                "tasks/list", types.PaginatedRequestParams, handlers.list_tasks
            )
        return TasksMiddleware(self, server)


class TasksServer(Server[Any]):
    """The SDK's low-level server, declaring tasks when the gateway serves them (the
    SDK's ``get_capabilities`` knows nothing of tasks): the ``tasks`` capability on
    2025-11-25, the ``io.modelcontextprotocol/tasks`` extension on 2026-07-28."""

    gateway_tasks: GatewayTasks | None = None

    def get_capabilities(
        self,
        notification_options: Any = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
        *,
        protocol_version: str | None = None,
    ) -> types.ServerCapabilities:
        capabilities = super().get_capabilities(
            notification_options,
            experimental_capabilities,
            extensions,
            protocol_version=protocol_version,
        )
        tasks = self.gateway_tasks
        if tasks is None or not tasks.declared():
            return capabilities
        if protocol_version in MODERN_PROTOCOL_VERSIONS:
            # The extension, never the legacy capability, on an era that has it.
            extensions = {**(capabilities.extensions or {}), TASKS_EXTENSION: {}}
            return capabilities.model_copy(update={"extensions": extensions})
        return capabilities.model_copy(update={"tasks": tasks.capability()})


class TasksMiddleware:
    """Turns a 2025-11-25 task-augmented ``tools/call`` into a task of the bus's store.

    Placed after the policy chain: the call was rate-limited, allowed, validated and is
    audited like any other before it becomes a task.
    """

    def __init__(self, tasks: GatewayTasks, server: Server[Any]) -> None:
        self._tasks = tasks
        self._server = server

    async def __call__(self, ctx: Ctx, call_next: Any) -> Any:
        if ctx.method in ("initialize", "server/discover"):
            # Capabilities are computed synchronously, from the last catalogs read.
            await self._tasks.refresh()
            result = await call_next(ctx)
            if ctx.method == "initialize":
                self._declare(result)
            return result
        if ctx.method != "tools/call" or ctx.request_id is None:
            return await call_next(ctx)
        params = dict(ctx.params or {})
        name = params.get("name")
        if not isinstance(name, str):
            return await call_next(ctx)
        augmented = "task" in params
        requested = params.pop("task", None)
        if not _legacy(ctx):
            # 2026-07-28: the legacy params.task is "unknown", ignored (stripped).
            created = await self._tasks.call_2026(principal_of(ctx), params, declares_tasks(ctx))
            if created is not None:
                # Short-circuited: the result is ours to shape (resultType, serverInfo).
                return shaped_result(self._server, "tools/call", ctx.protocol_version, created)
            return await call_next(replace(ctx, params=params) if augmented else ctx)
        if not self._tasks.declared():
            # "Receivers that do not declare the task capability for a request type MUST
            # process requests of that type normally, ignoring any task-augmentation."
            return await call_next(replace(ctx, params=params) if augmented else ctx)
        support = await self._tasks.support_of(name)
        if not augmented:
            if support == "required":
                raise MCPError(
                    METHOD_NOT_FOUND,
                    f"tool {name!r} runs only as a task (execution.taskSupport is "
                    "'required'): send tools/call with params.task",
                )
            return await call_next(ctx)
        if support is None:  # no pool offers it: the ordinary path says so
            return await call_next(replace(ctx, params=params))
        if support == "forbidden":
            raise MCPError(
                METHOD_NOT_FOUND,
                f"tool {name!r} does not run as a task (execution.taskSupport is "
                "'forbidden'): call it without params.task",
            )
        ttl_s = _requested_ttl_s(requested)
        record = await self._tasks.create_task(
            principal_of(ctx), name, params, ttl_s, accepts_input=client_answers_input(ctx)
        )
        return create_result_2025(record)

    def _declare(self, result: Any) -> None:
        """Add the capability to an ``initialize`` result built from options computed
        before the catalogs were read (a transport may compute them once, at connect)."""
        capabilities = result.get("capabilities") if isinstance(result, dict) else None
        if (
            isinstance(capabilities, dict)
            and "tasks" not in capabilities
            and self._tasks.declared()
        ):
            capability = self._tasks.capability()
            capabilities["tasks"] = capability.model_dump(
                by_alias=True, mode="json", exclude_none=True
            )


def _requested_ttl_s(task: Any) -> float | None:
    """``params.task.ttl`` (milliseconds) in seconds; None: the store's default."""
    try:
        metadata = types.TaskMetadata.model_validate(task if task is not None else {})
    except ValidationError:
        raise MCPError(INVALID_PARAMS, "params.task must be an object {ttl?: integer}") from None
    if metadata.ttl is None:
        return None
    if metadata.ttl <= 0:
        raise MCPError(INVALID_PARAMS, "params.task.ttl must be a positive number of ms")
    return metadata.ttl / 1000


class _Handlers:
    """The ``tasks/*`` request handlers of both eras (one registration per method)."""

    def __init__(self, tasks: GatewayTasks) -> None:
        self._tasks = tasks
        self._store = tasks.store

    def _check(self, ctx: Ctx, task_id: str | None = None, *, era_2025: bool = True) -> str:
        """The caller's principal, once the request is one this gateway serves.

        2026-07-28: the extension must be declared on the request (checked before the
        task is looked up, as the extension requires) and, over HTTP, ``Mcp-Name``
        must name the task.
        """
        if not self._tasks.declared():
            # A gateway whose bus runs no task tool serves no tasks/* at all.
            raise MCPError(METHOD_NOT_FOUND, "Method not found", ctx.method)
        if _legacy(ctx):
            if not era_2025:
                raise MCPError(METHOD_NOT_FOUND, "Method not found", ctx.method)
        elif task_id is None:  # tasks/result and tasks/list do not exist on this era
            raise MCPError(METHOD_NOT_FOUND, "Method not found", ctx.method)
        else:
            if not declares_tasks(ctx):
                raise missing_tasks_extension(ctx.method)
            check_mcp_name(ctx, task_id)
        return principal_of(ctx)

    async def get(self, ctx: Ctx, params: types.GetTaskRequestParams) -> dict[str, Any]:
        principal = self._check(ctx, params.task_id)
        try:
            record = await self._store.get(params.task_id, principal)
        except (CallError, ConnectionClosed) as exc:
            raise _mcp_error(exc) from None
        return view_2025(record) if _legacy(ctx) else view_2026(record)

    async def result(self, ctx: Ctx, params: types.GetTaskPayloadRequestParams) -> dict[str, Any]:
        principal = self._check(ctx)
        try:
            # "MUST block the response until the task reaches a terminal status"; what the
            # tool asks meanwhile is relayed on this call's stream (tasks_input).
            inputs = self._tasks.inputs
            record = await inputs.wait_for_result(ctx, self._store, params.task_id, principal)
        except (CallError, ConnectionClosed) as exc:
            raise _mcp_error(exc) from None
        answer = result_2025(record)
        error = answer.get("error")
        if isinstance(error, dict):
            # "exactly what the underlying request would have returned": its error.
            raise MCPError(int(error["code"]), str(error.get("message", "")), error.get("data"))
        return answer

    async def cancel(self, ctx: Ctx, params: types.CancelTaskRequestParams) -> dict[str, Any]:
        principal = self._check(ctx, params.task_id)
        legacy = _legacy(ctx)
        try:
            record = await self._store.get(params.task_id, principal)
            if record.status.terminal:
                if legacy:
                    raise _terminal(record)
                return cancel_ack_2026()  # 2026: acknowledged, even once ended
            # The store cancels idempotently; a task that ended meanwhile keeps its status.
            record = await self._store.cancel(params.task_id, principal)
        except (CallError, ConnectionClosed) as exc:
            raise _mcp_error(exc) from None
        if not legacy:
            return cancel_ack_2026()
        if record.status is not TaskStatus.CANCELLED:
            raise _terminal(record)
        return view_2025(record)

    async def update(self, ctx: Ctx, params: UpdateTaskRequestParams) -> dict[str, Any]:
        principal = self._check(ctx, params.task_id, era_2025=False)
        try:
            await self._store.respond(params.task_id, principal, params.input_responses)
        except (CallError, ConnectionClosed) as exc:
            raise _mcp_error(exc) from None
        # Answers for keys that are not outstanding were not delivered: the extension
        # asks servers to ignore them, so the ack is the same (see actors.tasks.inputs).
        return cancel_ack_2026()

    async def list_tasks(self, ctx: Ctx, params: types.PaginatedRequestParams) -> dict[str, Any]:
        principal = self._check(ctx)
        try:
            records = await self._store.list_tasks(principal)
        except (CallError, ConnectionClosed) as exc:
            raise _mcp_error(exc) from None
        ordered = sorted(records, key=_list_key)
        if params.cursor is not None:
            after = _cursor_key(params.cursor)
            ordered = [r for r in ordered if _list_key(r) > after]
        page = ordered[:_LIST_PAGE]
        result: dict[str, Any] = {"tasks": [view_2025(r) for r in page]}
        if len(ordered) > len(page):
            result["nextCursor"] = _cursor_of(page[-1])
        return result


def _terminal(record: TaskRecord) -> MCPError:
    # "Receivers MUST reject cancellation requests for tasks already in a terminal status".
    status = view_2025(record)["status"]
    return MCPError(INVALID_PARAMS, f"Cannot cancel task: already in terminal status {status!r}")


def _list_key(record: TaskRecord) -> tuple[float, str]:
    return (record.created_at, record.task_id)


def _cursor_of(record: TaskRecord) -> str:
    raw = json.dumps([record.created_at, record.task_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _cursor_key(cursor: str) -> tuple[float, str]:
    # A cursor is the last listed task's sort key: stable while tasks expire meanwhile.
    try:
        created_at, task_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return float(created_at), str(task_id)
    except (ValueError, TypeError, binascii.Error):
        raise MCPError(INVALID_PARAMS, "Invalid cursor for tasks/list") from None
