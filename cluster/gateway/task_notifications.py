"""Pushed task status notifications, both eras, from the task store's change feed.

* **2025-11-25** ``notifications/tasks/status`` (``basic/utilities/tasks``, "Task Status
  Notification"): the full ``Task`` (no related-task ``_meta``), sent to the session
  that created the task, on its standalone GET SSE stream, while that session is
  connected. No other session or principal hears of it. The era's ``tasks`` capability
  has no flag for it (the notifications are optional; requestors keep polling). The
  same session hears the task's ``notifications/progress`` under the ``progressToken``
  of the request that created it, which stays valid for the task's lifetime ("Task
  Progress Notifications").
* **2026-07-28** ``notifications/tasks`` (SEP-2663, "Task Status Notifications"): a
  ``subscriptions/listen`` whose ``notifications.taskIds`` names tasks gets, for each one
  its principal may see (as ``tasks/get`` decides: the task's owner), the ``DetailedTask``
  ``tasks/get`` would answer, once right after the acknowledgement and then at every
  status change. The acknowledgement lists the task ids agreed to. A client that did not
  declare the ``io.modelcontextprotocol/tasks`` extension on the listen request is
  refused with ``-32021``. List-change events ride the same stream as before.

How the gateway learns of changes: one watcher per gateway replica long-polls the
store's change feed (:mod:`actors.tasks.feed`), so a change costs one Ray call however
many tasks are open; a listener's completed task costs one more (the feed carries no
result bodies). The watcher starts with the first task or listener that needs it and
keeps its cursor; a store Ray restarted answers with a new epoch and its whole feed, and
only tasks whose status differs from what was last pushed are pushed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast, runtime_checkable

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectSendStream
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import ListenHandler, SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import (
    SUBSCRIPTION_ID_META_KEY,
    ServerEvent,
    event_matches,
    event_to_notification,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from actors.tasks.feed import FeedBatch, FeedCursor, status_key
from actors.tasks.model import TaskRecord, TaskStatus, view_2025, view_2026
from cluster.gateway.policy.chain import principal_of
from cluster.gateway.tasks_modern import declares_tasks, missing_tasks_extension
from transports.errors import INVALID_PARAMS, CallError, ConnectionClosed

__all__ = ["TaskFeedPort", "TaskListenHandler", "TaskNotifications"]

logger = logging.getLogger(__name__)

Ctx = ServerRequestContext[Any, Any]
StatusKey = tuple[str, bool, tuple[str, ...]]

# One long poll of the feed; under the store port's own bound on a call.
_POLL_S = 25.0
# How long a task's creation or a listen request waits for the watcher's first cursor
# (a store started on first use: a process start on a loaded 2-core machine).
_READY_S = 30.0
_RECENT = 1024
_MAX_TASK_IDS = 100
_MAX_BUFFERED = 256
_WORKING: StatusKey = (str(TaskStatus.WORKING), False, ())


@runtime_checkable
class TaskFeedPort(Protocol):
    """What the notifications need of the task store (``RemoteTaskStore`` has it)."""

    async def changes(self, cursor: FeedCursor | None, timeout_s: float) -> FeedBatch: ...

    async def get(self, task_id: str, principal: str) -> TaskRecord: ...


class _TasksNotification(types.Notification[dict[str, Any], Literal["notifications/tasks"]]):
    method: Literal["notifications/tasks"] = "notifications/tasks"


@dataclass
class _Creator:
    """The 2025 session that created a task, and what it was last told."""

    connection: weakref.ref[Connection]
    principal: str
    # The task-augmented request's progressToken: valid for the task's lifetime.
    progress_token: str | int | None = None
    told: StatusKey = _WORKING
    told_progress: float | None = None

    def progress_update(self, record: TaskRecord) -> dict[str, Any] | None:
        """The ``notifications/progress`` params ``record`` calls for, if any: progress
        only ever increases (a re-run that starts again from 0 is not reported back)."""
        if self.progress_token is None or record.progress is None:
            return None
        if self.told_progress is not None and record.progress <= self.told_progress:
            return None
        self.told_progress = record.progress
        params: dict[str, Any] = {"progressToken": self.progress_token, "progress": record.progress}
        if record.total is not None:
            params["total"] = record.total
        if record.status_message is not None:
            params["message"] = record.status_message
        return params


@dataclass(eq=False)
class _Listener:
    """One 2026 listen stream with task ids."""

    principal: str
    send: MemoryObjectSendStream[ServerEvent | dict[str, Any]]
    told: dict[str, StatusKey] = field(default_factory=dict)

    def offer(self, record: TaskRecord) -> None:
        key = status_key(record)
        if self.told.get(record.task_id) == key:
            return
        self.told[record.task_id] = key
        params = {k: v for k, v in view_2026(record).items() if k != "resultType"}
        try:
            self.send.send_nowait(params)
        except anyio.WouldBlock:
            logger.warning("a listen stream's backlog is full; ending the stream")
            self.send.close()
        except anyio.ClosedResourceError:
            pass


class TaskNotifications:
    """The replica's feed watcher and who hears of which task."""

    def __init__(self, store: TaskFeedPort) -> None:
        self._store = store
        self._creators: dict[str, _Creator] = {}
        self._listeners: dict[str, set[_Listener]] = {}
        self._recent: OrderedDict[str, TaskRecord] = OrderedDict()
        self._cursor: FeedCursor | None = None
        self._ready = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> bool:
        """Start the watcher unless it runs; wait (bounded) for its first cursor.
        False: the store did not answer in time (notifications are then best effort)."""
        if self._watcher is None or self._watcher.done():
            # A context of its own: the watcher outlives the request that started it
            # (its trace context, its principal).
            loop = asyncio.get_running_loop()
            self._watcher = loop.create_task(self._watch(), context=contextvars.Context())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_READY_S):
                await self._ready.wait()
        return self._ready.is_set()

    async def aclose(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    # -- 2025-11-25 ------------------------------------------------------------------

    async def created(
        self,
        task_id: str,
        connection: Connection,
        principal: str,
        progress_token: str | int | None = None,
    ) -> None:
        """A 2025 session created ``task_id``: it hears of the task's status changes, and
        of its progress under ``progress_token`` when the request carried one."""
        if len(self._creators) > _RECENT:  # forget sessions that are gone
            gone = [t for t, c in self._creators.items() if c.connection() is None]
            for stale in gone:
                del self._creators[stale]
        self._creators[task_id] = _Creator(weakref.ref(connection), principal, progress_token)
        record = self._recent.get(task_id)
        if record is not None:  # it changed before its creator was known
            await self._tell_creator(record)

    async def _tell_creator(self, record: TaskRecord) -> None:
        creator = self._creators.get(record.task_id)
        if creator is None or creator.principal != record.principal:
            return
        connection = creator.connection()
        if connection is None or record.status.terminal:
            del self._creators[record.task_id]
        if connection is None:
            return
        with contextlib.suppress(Exception):  # a closed connection is simply skipped
            progressed = creator.progress_update(record)
            if progressed is not None:
                await connection.outbound.notify("notifications/progress", progressed)
            key = status_key(record)
            if key != creator.told:
                creator.told = key
                await connection.outbound.notify("notifications/tasks/status", view_2025(record))

    # -- 2026-07-28 ------------------------------------------------------------------

    async def listen(self, listener: _Listener, task_ids: list[str]) -> list[str]:
        """Register ``listener`` for the tasks its principal may see; those task ids.
        Each one's current state is offered at once."""
        for task_id in task_ids:  # before the reads: no change falls between
            self._listeners.setdefault(task_id, set()).add(listener)
        await self.start()
        records = await asyncio.gather(*(self._visible(t, listener.principal) for t in task_ids))
        agreed: list[str] = []
        for task_id, record in zip(task_ids, records, strict=True):
            if record is None:
                self._drop(listener, [task_id])
            else:
                agreed.append(task_id)
                listener.offer(record)
        return agreed

    def unlisten(self, listener: _Listener, task_ids: list[str]) -> None:
        self._drop(listener, task_ids)

    def _drop(self, listener: _Listener, task_ids: list[str]) -> None:
        for task_id in task_ids:
            listeners = self._listeners.get(task_id)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._listeners[task_id]

    async def _visible(self, task_id: str, principal: str) -> TaskRecord | None:
        try:
            return await self._store.get(task_id, principal)
        except (CallError, ConnectionClosed):
            return None  # unknown, expired, another principal's, or no store

    async def _tell_listeners(self, record: TaskRecord) -> None:
        listeners = [
            listener
            for listener in self._listeners.get(record.task_id, ())
            if listener.principal == record.principal
        ]
        if not listeners:
            return
        if record.status is TaskStatus.COMPLETED:  # the feed has no result body
            full = await self._visible(record.task_id, record.principal)
            if full is None:
                return
            record = full
        for listener in listeners:
            listener.offer(record)

    # -- the watcher -----------------------------------------------------------------

    async def _watch(self) -> None:
        backoff_s = 0.5
        while True:
            try:
                batch = await self._store.changes(self._cursor, _POLL_S)
            except Exception:  # the watcher outlives a store that is away
                logger.exception("reading the task store's changes failed")
                await asyncio.sleep(backoff_s)  # backoff before asking again
                backoff_s = min(backoff_s * 2, 10.0)
                continue
            backoff_s = 0.5
            self._cursor = batch.cursor
            self._ready.set()
            for record in batch.records:
                try:
                    await self._dispatch(record)
                except Exception:  # one task's push must not stop the others'
                    logger.exception("pushing the status of task %s failed", record.task_id)

    async def _dispatch(self, record: TaskRecord) -> None:
        self._recent.pop(record.task_id, None)
        self._recent[record.task_id] = record
        while len(self._recent) > _RECENT:
            self._recent.popitem(last=False)
        await self._tell_creator(record)
        await self._tell_listeners(record)


class TaskNotificationsMiddleware:
    """Notes which 2025 session created which task (after the policy chain, before the
    tasks middleware that answers the task-augmented ``tools/call``)."""

    def __init__(self, notifications: TaskNotifications) -> None:
        self._notifications = notifications

    async def __call__(self, ctx: Ctx, call_next: Any) -> Any:
        legacy = ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS
        if ctx.method != "tools/call" or not legacy or "task" not in (ctx.params or {}):
            return await call_next(ctx)
        # The watcher's cursor comes first: every change after the creation is read.
        await self._notifications.start()
        result = await call_next(ctx)
        task = result.get("task") if isinstance(result, dict) else None
        if isinstance(task, dict) and isinstance(task.get("taskId"), str):
            connection: Connection = ctx.session._connection  # the SDK keeps it private
            meta = (ctx.params or {}).get("_meta")
            token = meta.get("progressToken") if isinstance(meta, dict) else None
            token = token if isinstance(token, str | int) and not isinstance(token, bool) else None
            await self._notifications.created(task["taskId"], connection, principal_of(ctx), token)
        return result


class TaskListenHandler:
    """``subscriptions/listen`` with task ids as well as the SDK's list-change events.

    A request without ``notifications.taskIds`` (or a gateway that serves no tasks) is
    the SDK's :class:`ListenHandler`'s; with them, this serves the stream the same way
    (ack first, every frame stamped with the subscription id, a bounded backlog).
    """

    def __init__(
        self,
        events: SubscriptionBus,
        notifications: TaskNotifications | None,
        serves_tasks: Callable[[], bool],
    ) -> None:
        self._events = events
        self._plain = ListenHandler(events)
        self._notifications = notifications
        self._serves_tasks = serves_tasks

    async def __call__(
        self, ctx: Ctx, params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        requested = params.notifications
        task_ids = (requested.model_extra or {}).get("taskIds")
        if task_ids is None or self._notifications is None or not self._serves_tasks():
            return await self._plain(ctx, params)
        if (
            not isinstance(task_ids, list)
            or not all(isinstance(t, str) for t in task_ids)
            or len(task_ids) > _MAX_TASK_IDS
        ):
            raise MCPError(
                INVALID_PARAMS,
                f"params.notifications.taskIds must be a list of at most {_MAX_TASK_IDS} "
                "task ids (strings)",
            )
        if not declares_tasks(ctx):
            raise missing_tasks_extension("task notifications on subscriptions/listen")
        if ctx.request_id is None:
            raise MCPError(INVALID_PARAMS, "subscriptions/listen requires a request id")
        return await self._serve(ctx, requested, list(dict.fromkeys(task_ids)))

    async def _serve(
        self, ctx: Ctx, requested: types.SubscriptionFilter, task_ids: list[str]
    ) -> types.SubscriptionsListenResult:
        assert self._notifications is not None
        subscription_id = ctx.request_id
        meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: subscription_id}
        honored = types.SubscriptionFilter(
            tools_list_changed=True if requested.tools_list_changed else None,
            prompts_list_changed=True if requested.prompts_list_changed else None,
            resources_list_changed=True if requested.resources_list_changed else None,
            resource_subscriptions=list(requested.resource_subscriptions or ()) or None,
        )
        uris = frozenset(honored.resource_subscriptions or ())
        send, receive = anyio.create_memory_object_stream[ServerEvent | dict[str, Any]](
            _MAX_BUFFERED
        )
        listener = _Listener(principal_of(ctx), send)

        def deliver(event: ServerEvent) -> None:
            if not event_matches(honored, uris, event):
                return
            try:
                send.send_nowait(event)
            except anyio.WouldBlock:  # a client that stopped reading: end the stream
                send.close()
            except anyio.ClosedResourceError:
                pass

        unsubscribe = self._events.subscribe(deliver)
        try:
            agreed = await self._notifications.listen(listener, task_ids)
            shown = honored.model_dump(by_alias=True, mode="json", exclude_none=True)
            acked = types.SubscriptionFilter.model_validate({**shown, "taskIds": agreed})
            ack = types.SubscriptionsAcknowledgedNotification(
                params=types.SubscriptionsAcknowledgedNotificationParams(
                    notifications=acked, _meta=meta
                )
            )
            await ctx.session.send_notification(ack, related_request_id=subscription_id)
            async for frame in receive:
                if isinstance(frame, dict):
                    notification: Any = _TasksNotification(params={**frame, "_meta": meta})
                else:
                    notification = event_to_notification(frame, meta)
                await ctx.session.send_notification(
                    cast(types.ServerNotification, notification),
                    related_request_id=subscription_id,
                )
        finally:
            unsubscribe()
            self._notifications.unlisten(listener, task_ids)
            send.close()
            receive.close()
        return types.SubscriptionsListenResult(_meta=meta)
