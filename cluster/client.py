"""The Python client for notebooks and batch jobs: call tools on a running bus.

::

    client = await BusClient.connect("demo")          # a bus on this Ray cluster
    result = await client.call_tool("add", {"a": 1, "b": 2})
    results = await client.map_tool_calls([("add", {"a": i, "b": i}) for i in range(1000)])

Calls are batched on the way out (one submission per event-loop turn) and handed to the
bus's backend (:mod:`cluster.backends`), which carries them and brings the answers back;
the client never asks which backend it is. Every call ends in exactly one outcome: its
result, a :class:`CallError`, or :class:`~transports.errors.BusTimeout`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from typing import Any

import mcp_types as types
import ray

from actors.discovery.catalog import Catalog
from actors.tracing import call_trace_context
from actors.worker.request_params import with_stateless_envelope
from cluster.backends.base import backend_for
from cluster.backends.ray import dispatch
from cluster.client_connection import (
    ClientConnection,
    MessageHandler,
    Pending,
    ProgressCallback,
    ServerRequestHandler,
)
from cluster.durable import Answer, AnswerBuffer, DurableCalls, client_name, new_incarnation
from cluster.fanout import IndexedOutcome, checked_tool_call, stream_bounded
from cluster.naming import actor_names, get_actor_async
from cluster.tasks.handle import TaskHandle, ask_store
from transports.envelope import ANONYMOUS, Envelope
from transports.errors import (
    INTERNAL_ERROR,
    BusError,
    BusErrorCode,
    BusTimeout,
    CallError,
    ConnectionClosed,
)
from transports.frame import Frame
from transports.labels import checked_labels, label_conflict, with_labels
from transports.message import Notification, Request, Response

__all__ = [
    "Answer",
    "BusClient",
    "CallError",
    "IndexedOutcome",
    "MessageHandler",
    "ProgressCallback",
    "TaskHandle",
    "ToolCall",
]

logger = logging.getLogger(__name__)

# One call of a fan-out: the tool's name and its arguments.
ToolCall = tuple[str, dict[str, Any] | None]

_GRACE_S = 5.0


class BusClient(DurableCalls):
    """One client session on a bus; create with :meth:`connect`, end with :meth:`close`.

    :meth:`new_session` opens further sessions over the same endpoint: each has its own
    client id and its own request ids (which may collide with other sessions' ids).
    """

    def __init__(
        self,
        connection: ClientConnection,
        client_id: str,
        principal: str,
        labels: dict[str, str] | None = None,
    ) -> None:
        self._connection = connection
        self.client_id = client_id
        self._principal = principal
        self.labels = checked_labels(labels)  # on every call (README "Regions")
        self._ids = itertools.count(1)
        self.server_request_handler: ServerRequestHandler | None = None
        # Notifications not about a call of this session (e.g. resources/updated).
        self.notification_handler: Callable[[Notification], Awaitable[None]] | None = None
        self.notifications: deque[Notification] = deque(maxlen=1000)  # newest kept
        connection.sessions[client_id] = self

    @property
    def bus(self) -> str:
        return self._connection.bus

    @classmethod
    async def connect(
        cls,
        bus: str = "default",
        *,
        principal: str = ANONYMOUS,
        timeout_s: float = 30.0,
        inbox: str | None = None,
        labels: dict[str, str] | None = None,
        durable_id: str | None = None,
    ) -> BusClient:
        """Attach to a running bus by name (Ray must already be initialised).

        ``labels``: carried by every call of this client, e.g. ``{"region": "eu"}`` keeps
        them on pools of region eu (``router.regions``); a call cannot contradict them.

        ``inbox``: the name of the actor this client runs in, which passes every
        ``deliver(frames)`` call it gets to :meth:`deliver`; answers then come straight
        to it instead of through a mailbox actor the client polls (one hop less).

        ``durable_id``: a fixed client id on a Kafka or SQS bus: answers outlive this
        connection and come to the next one with the same id (:mod:`cluster.durable`).

        Raises:
            ConnectionClosed: Ray is not initialised or no bus with that name runs.
            ValueError: a bad ``durable_id``, or one on a Ray bus.
        """
        name = client_name(bus, durable_id, inbox)
        if not ray.is_initialized():
            raise ConnectionClosed("Ray is not initialised: call ray.init() (or use `raybus up`)")
        router = await get_actor_async(actor_names.router(bus))
        discovery = await get_actor_async(actor_names.discovery(bus))
        async with asyncio.timeout(timeout_s):
            await router.ping.remote()
        connection = ClientConnection(bus, discovery)
        if durable_id is not None:
            connection.durable, connection.id_prefix = AnswerBuffer(), new_incarnation()
        supervisor = await get_actor_async(actor_names.supervisor(bus))
        config = await supervisor.config.remote()
        backend = backend_for(config)
        durable = durable_id is not None
        link = await backend.open_client(
            name, router, discovery, connection._dispatch, inbox=inbox is not None, durable=durable
        )
        connection.attach(link)
        return cls(connection, name.rsplit("/", 1)[-1], principal, checked_labels(labels))

    async def deliver(self, frames: list[Frame]) -> None:
        """Answers delivered to the actor this client runs in (see ``inbox``)."""
        await dispatch(frames, self._connection._dispatch)

    def new_session(self, *, principal: str | None = None) -> BusClient:
        """Another session sharing this client's endpoint (cheap: no new actor)."""
        return BusClient(
            self._connection,
            f"{self.client_id}.{uuid.uuid4().hex[:8]}",
            principal or self._principal,
            self.labels,
        )

    def forget(self) -> None:
        """End this session only (its siblings and the connection stay)."""
        self._connection.sessions.pop(self.client_id, None)

    async def close(self) -> None:
        """Close the connection, failing this and every sibling session's open calls
        (a durable client's calls run on: their answers wait for its next connection)."""
        await self._connection.close()

    async def __aenter__(self) -> BusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        params: dict[str, Any],
        *,
        name: str | None,
        timeout_s: float = 60.0,
        progress: ProgressCallback | None = None,
        on_message: MessageHandler | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        labels: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Send one routed request; returns its ``result`` object.

        ``on_message`` (if given) receives every notification and server request about
        this call, in order, instead of the session-wide handlers.

        The call carries a W3C trace context to the worker and its server (in
        ``params._meta``): ``traceparent`` / ``tracestate`` if given, else those in
        ``params["_meta"]``, else the current OpenTelemetry span's, if one is active.

        ``labels`` are added to the client's (see :meth:`connect`) for this call. With an
        ``idempotency_key`` it runs at most once per key (README "Idempotency keys").

        Raises:
            ValueError: ``traceparent`` is not a valid W3C traceparent (or
                ``tracestate`` is given without it), or a label is not valid.
            CallError: the call ended with a JSON-RPC error; 1010 before sending when
                ``labels`` contradict the client's.
            BusTimeout: no outcome within ``timeout_s`` (plus a short grace).
            ConnectionClosed: the client was closed.
        """
        if (conflict := label_conflict(self.labels, labels or {})) is not None:
            raise CallError(method, BusErrorCode.REGION_REFUSED, f"region refused: {conflict}")
        number = next(self._ids)
        request_id = f"{self._connection.id_prefix}{number}"
        if progress is not None:
            params = {**params, "_meta": {**params.get("_meta", {}), "progressToken": number}}
        if method == "tools/call" and on_message is None and self.server_request_handler is None:
            params = with_stateless_envelope(params)  # nobody would answer the server
        connection = self._connection
        trace = call_trace_context(params, traceparent, tracestate)
        envelope = Envelope(
            client_id=self.client_id,
            request_id=request_id,
            principal=self._principal,
            reply_to=connection.reply_to,
            method=method,
            name=name,
            traceparent=trace.traceparent if trace is not None else None,
            tracestate=trace.tracestate if trace is not None else None,
            idempotency_key=idempotency_key,
        ).with_deadline_in(timeout_s)
        envelope = with_labels(envelope, {**self.labels, **(labels or {})})
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        key = (self.client_id, request_id)
        connection.pending[key] = Pending(method, future, progress, on_message)
        connection.submissions.put(
            "router", Frame.of(envelope, Request(id=number, method=method, params=params))
        )
        try:
            async with asyncio.timeout(timeout_s + _GRACE_S):
                response = await future
        except TimeoutError:
            raise BusTimeout(method, timeout_s) from None
        except asyncio.CancelledError:
            connection.cancel([envelope.correlation_key])
            raise
        finally:
            connection.pending.pop(key, None)
        if response.error is not None:
            raise CallError.of(method, response.error)
        if not isinstance(response.result, dict):
            raise CallError(method, INTERNAL_ERROR, "result is not an object")
        return response.result

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        timeout_s: float = 60.0,
        progress: ProgressCallback | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        labels: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> types.CallToolResult:
        """Call one tool; its result (a tool's own failure is ``isError``, not raised).

        ``traceparent`` / ``tracestate``: the call's W3C trace context; without them the
        current OpenTelemetry span's, if one is active (see :meth:`request`).

        Raises:
            ValueError: ``traceparent`` is not a valid W3C traceparent.
            CallError: the call ended with a JSON-RPC error (unknown tool, bad
                arguments, a bus error such as overloaded).
            BusTimeout: no outcome within ``timeout_s``.
        """
        result = await self.request(
            "tools/call",
            {"name": name, "arguments": arguments or {}},
            name=name,
            timeout_s=timeout_s,
            progress=progress,
            traceparent=traceparent,
            tracestate=tracestate,
            labels=labels,
            idempotency_key=idempotency_key,
        )
        return types.CallToolResult.model_validate(result)

    # -- tasks (long-running tools; cluster.tasks.handle) -------------------------------

    async def start_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        ttl_s: float | None = None,
        answers_input: bool = False,
    ) -> TaskHandle:
        """Start a tool as a task: returns once the bus has recorded it, while it runs.

        The task outlives this client: keep ``handle.id`` and :meth:`open_task` it from
        any process (same principal). ``ttl_s``: how long its outcome is kept (raised to
        at least its run timeout plus a minute; capped by the bus's ``tasks.max_ttl_s``).
        ``answers_input``: the tool's requests for input wait for
        :meth:`TaskHandle.respond` (else they are refused at once).

        Raises:
            CallError: -32602 unknown tool; -32601 the tool does not run as a task (its
                pool's ``tasks.tools`` does not list it); 1002 too many open tasks.
        """
        store = await self._task_store()
        record = await ask_store(
            store, "create", self._principal, name, arguments or {}, ttl_s, answers_input
        )
        return TaskHandle(store, self._principal, record)

    async def open_task(self, task_id: str) -> TaskHandle:
        """Re-open a task by id (started by any process of this principal).

        Raises:
            CallError: -32602 the task is unknown, expired or another principal's.
        """
        store = await self._task_store()
        record = await ask_store(store, "get", task_id, self._principal)
        return TaskHandle(store, self._principal, record)

    async def _task_store(self) -> Any:
        from cluster.ray_actors.task_store import task_store_for  # Ray buses only

        return await task_store_for(self.bus, self._connection.handles)

    async def read_resource(self, uri: str, *, timeout_s: float = 60.0) -> types.ReadResourceResult:
        result = await self.request("resources/read", {"uri": uri}, name=uri, timeout_s=timeout_s)
        return types.ReadResourceResult.model_validate(result)

    async def get_prompt(
        self, name: str, arguments: dict[str, str] | None = None, *, timeout_s: float = 60.0
    ) -> types.GetPromptResult:
        params: dict[str, Any] = {"name": name, "arguments": arguments or {}}
        result = await self.request("prompts/get", params, name=name, timeout_s=timeout_s)
        return types.GetPromptResult.model_validate(result)

    async def catalogs(self) -> dict[str, Catalog]:
        catalogs: dict[str, Catalog] = await self._connection.discovery.catalogs.remote()
        return catalogs

    async def list_changed_counters(
        self, seen: dict[str, int] | None = None, wait_s: float = 0.0
    ) -> dict[str, int]:
        """How many times each list (tool / prompt / resource) has changed on the bus.

        With ``seen`` (counters read before), waits up to ``wait_s`` (at most 60 s) for
        them to differ from it, and returns them either way.
        """
        discovery = self._connection.discovery
        counters: dict[str, int] = await discovery.list_changed.remote(seen, wait_s)
        return counters

    async def list_tools(self) -> list[types.Tool]:
        """Every tool offered by any pool (from the discovery registry, no worker call)."""
        catalogs = await self.catalogs()
        seen: dict[str, types.Tool] = {}
        for catalog in catalogs.values():
            for tool in catalog.tools:
                seen.setdefault(tool["name"], types.Tool.model_validate(tool))
        return list(seen.values())

    def stream_tool_calls(
        self,
        calls: Iterable[ToolCall] | AsyncIterable[ToolCall],
        *,
        concurrency: int = 64,
        timeout_s: float = 60.0,
    ) -> AsyncGenerator[IndexedOutcome, None]:
        """Run tool calls with at most ``concurrency`` in flight; yield each as it ends.

        ``calls`` is any iterable or async iterable of ``(tool name, arguments)``, pulled
        lazily: at most ``concurrency`` calls and their not-yet-yielded outcomes are held
        at once, so memory stays flat however many calls stream through. Outcomes come in
        completion order as :class:`IndexedOutcome` (the input's index, and the result or
        the ``BusError`` the call ended with: one failure never stops the stream).
        Stopping early cancels the calls in flight, on the bus too; close the stream
        explicitly to have that happen at once::

            async with contextlib.aclosing(client.stream_tool_calls(calls)) as outcomes:
                async for outcome in outcomes:
                    ...

        Raises:
            ValueError: ``concurrency`` is not an integer >= 1 (at the call).
            TypeError: an input item is not a ``(str, dict)`` pair (when it is pulled;
                the calls in flight are cancelled first).
        """

        async def one(index: int, call: ToolCall) -> IndexedOutcome:
            name, arguments = checked_tool_call(index, call)
            try:
                result = await self.call_tool(name, arguments, timeout_s=timeout_s)
            except BusError as exc:
                return IndexedOutcome(index, exc)
            return IndexedOutcome(index, result)

        return stream_bounded(calls, one, concurrency=concurrency)

    async def map_tool_calls(
        self,
        calls: Iterable[ToolCall] | AsyncIterable[ToolCall],
        *,
        concurrency: int = 64,
        timeout_s: float = 60.0,
    ) -> list[types.CallToolResult | BusError]:
        """Run many tool calls with at most ``concurrency`` in flight; results in order.

        A failed call yields its error in place of a result, so one failure never hides
        the other outcomes. Built on :meth:`stream_tool_calls`; only the returned list
        grows with the input.

        Raises:
            ValueError: ``concurrency`` is not an integer >= 1.
        """
        outcomes: dict[int, types.CallToolResult | BusError] = {}
        stream = self.stream_tool_calls(calls, concurrency=concurrency, timeout_s=timeout_s)
        async for item in stream:
            outcomes[item.index] = item.outcome
        return [outcomes[index] for index in range(len(outcomes))]
