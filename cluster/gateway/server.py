"""The gateway: one MCP server in front of every pool of a bus.

The MCP protocol itself - both eras, sessions, SSE streams, version negotiation, the
2026-07-28 envelope and ``server/discover`` - is the official SDK's: the gateway is a
low-level SDK ``Server`` whose handlers forward to the bus. Lists (tools, resources,
templates, prompts) are aggregated from the discovery registry without calling any
worker; calls travel through the router to a worker. What a worker's server sends about
a call (progress, logs, sampling / elicitation / roots requests) is relayed to the MCP
session that made the call, and the answer travels back.

Client credentials never leave the gateway: only the authenticated principal's name
travels in the envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Mapping, MutableMapping
from typing import Any

import mcp_types as types
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.subscriptions import (
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ToolsListChanged,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ConfigDict, TypeAdapter

from actors.discovery.catalog import Catalog, Kind
from actors.worker.hosted_server import CLOSE_SSE_STREAM
from cluster.gateway.bus import Bus, BusSession, MessageHandler
from cluster.gateway.call_meta import DetachedCalls, idempotency_extension, idempotency_key_in_meta
from cluster.gateway.policy.chain import (
    AuditLog,
    PolicyConfig,
    PolicyMiddleware,
    principal_of,
    request_state,
    token_labels_of,
)
from cluster.gateway.policy.oauth import TokenVerifier
from cluster.gateway.results import shaped_result
from cluster.gateway.task_notifications import (
    TaskFeedPort,
    TaskListenHandler,
    TaskNotifications,
    TaskNotificationsMiddleware,
)
from cluster.gateway.tasks import GatewayTasks, TasksServer
from cluster.gateway.tasks_modern import declares_tasks_in_meta
from cluster.gateway.tracing import GatewayTracing, forwarded_trace, gateway_hop
from cluster.metrics.recorders import GatewayRecorder
from cluster.metrics.registry import MetricsRegistry
from transports.errors import (
    INVALID_PARAMS,
    BusErrorCode,
    BusTimeout,
    CallError,
    ConnectionClosed,
    InvalidMessage,
)
from transports.labels import label_conflict, labels_in_meta
from transports.message import Notification, Request
from transports.tracecontext import TraceContext

__all__ = ["Gateway"]

logger = logging.getLogger(__name__)

Ctx = ServerRequestContext[Any, Any]

_CATALOG_TTL_S = 0.5
_LIST_CHANGES_WAIT_S = 30.0  # a list-changes long poll's longest wait (see discovery)
_LOG_LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
_EVENTS: dict[str, Any] = {
    Kind.TOOL: ToolsListChanged,
    Kind.PROMPT: PromptsListChanged,
    Kind.RESOURCE: ResourcesListChanged,
}
_LEGACY_NOTIFY = {
    Kind.TOOL: "notifications/tools/list_changed",
    Kind.PROMPT: "notifications/prompts/list_changed",
    Kind.RESOURCE: "notifications/resources/list_changed",
}
_CALL_RESULTS: dict[bool, type[types.Result]] = {
    False: types.CallToolResult,
    True: types.InputRequiredResult,
}
_server_request = TypeAdapter[types.ServerRequest](types.ServerRequest)
_server_notification = TypeAdapter[types.ServerNotification](types.ServerNotification)


class _AnyResult(types.Result):
    """A client's answer to a relayed request, kept whole (the worker validates it)."""

    model_config = ConfigDict(extra="allow")


class Gateway:
    """Builds the SDK server and puts the policy chain in front of its handlers."""

    def __init__(
        self,
        client: Bus,
        *,
        name: str = "raybus",
        call_timeout_s: float = 300.0,
        policy: PolicyConfig | None = None,
        metrics: MetricsRegistry | None = None,
        tasks: GatewayTasks | None = None,
        idempotency_ttl_s: float = 86_400.0,
    ) -> None:
        self._client = client
        # Keyed calls outlive their caller (cluster.gateway.call_meta).
        self._keyed_calls = DetachedCalls()
        # MCP tasks (2025-11-25 task-augmented tools/call), served from the bus's task
        # store; None where the bus cannot run tasks (cluster.gateway.tasks).
        self.tasks = tasks
        # Refusals are counted here; the process hosting the gateway exports them.
        self.metrics = metrics if metrics is not None else MetricsRegistry(name)
        self.refusals = GatewayRecorder(self.metrics)
        self._call_timeout_s = call_timeout_s
        # README "Regions": labels a principal's calls always carry (its token's).
        self._pinned = {
            t.principal: t.labels for t in (policy.tokens if policy else ()) if t.labels
        }
        self._bus_sessions: weakref.WeakKeyDictionary[Connection, BusSession] = (
            weakref.WeakKeyDictionary()
        )
        self._log_levels: weakref.WeakKeyDictionary[Connection, int] = weakref.WeakKeyDictionary()
        self._direct_sessions: dict[str, BusSession] = {}
        self._catalogs: dict[str, Catalog] = {}
        self._catalogs_at = 0.0
        self._catalogs_read: asyncio.Future[None] | None = None  # the one read under way
        self._catalogs_changed = False  # a list changed since that read began
        self._tools_index: tuple[object, dict[str, dict[str, Any]]] = (None, {})
        # 2026-07-28 clients hear about list changes on subscriptions/listen streams.
        self.events = InMemorySubscriptionBus()
        self._seen_changes: dict[str, int] | None = None
        # Pushed task status notifications, where the store has a change feed.
        self.task_notifications = (
            TaskNotifications(tasks.store)
            if tasks is not None and isinstance(tasks.store, TaskFeedPort)
            else None
        )
        listen = TaskListenHandler(
            self.events, self.task_notifications, lambda: tasks is not None and tasks.declared()
        )
        self.server: TasksServer = TasksServer(
            name,
            version="0.1.0",
            instructions="Tools, resources and prompts of every pool of a raybus bus.",
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
            on_subscribe_resource=self._subscribe,
            on_unsubscribe_resource=self._unsubscribe,
            on_list_prompts=self._list_prompts,
            on_get_prompt=self._get_prompt,
            on_completion=self._complete,
            on_set_logging_level=self._set_logging_level,
            on_subscriptions_listen=listen,
            # Without it the SDK checks each modern tools/call's Mcp-Param headers
            # against a full tools/list run through the handler chain (a fifth of the
            # gateway's CPU under load); the index is the one argument checks use.
            get_tool_input_schema=self.input_schema,
        )
        policy = policy or PolicyConfig()
        key = policy.audit_hmac_key
        self.audit = AuditLog(
            policy.audit_path, key.get_secret_value().encode() if key is not None else None
        )
        self.policy = PolicyMiddleware(
            policy, self.tools_by_name, self.audit, refusals=self.refusals
        )
        # Checks OAuth access tokens at the HTTP door (cluster.gateway.policy.resource_server).
        self.token_verifier = TokenVerifier(policy.oauth) if policy.oauth is not None else None
        self.server.extensions = idempotency_extension(idempotency_ttl_s)
        # A peer's notifications/cancelled reaches a keyed call even after the SDK let
        # go of its handler (cluster.gateway.call_meta).
        cancels = self._keyed_calls.middleware(lambda ctx, rid: (_connection_of(ctx), rid))
        # Our span replaces the SDK's OpenTelemetryMiddleware (its only entry): the same
        # SERVER span, but parented from the HTTP headers too, on the direct path too,
        # and handing its context to the bus (cluster.gateway.tracing).
        self.server.middleware = [cancels, GatewayTracing(), self.policy]
        if tasks is not None:
            self.server.gateway_tasks = tasks
            # After the policy chain: a call is allowed and audited before it becomes a task.
            if self.task_notifications is not None:
                notifications = TaskNotificationsMiddleware(self.task_notifications)
                self.server.middleware.append(notifications)
            self.server.middleware.append(tasks.attach(self.server, self.catalogs))

    async def aclose(self) -> None:
        """Write the audit records still queued (bounded wait) and stop the audit writer."""
        if self.token_verifier is not None:
            await self.token_verifier.aclose()
        if self.task_notifications is not None:
            await self.task_notifications.aclose()
        if not await asyncio.to_thread(self.audit.close):
            logger.warning("the audit log did not finish writing within its timeout")

    # -- list changes, from discovery ------------------------------------------------

    async def watch_list_changes(self, interval_s: float = 0.25) -> None:
        """Relay list changes on the bus to every client, until cancelled.

        Each round is a long poll: discovery answers when a list changed, or after
        ``_LIST_CHANGES_WAIT_S`` (so an idle replica makes one call a half minute, not
        four a second); ``interval_s`` apart at least, and after a failed round.
        """
        while True:
            try:
                await self._relay_list_changes(wait_s=_LIST_CHANGES_WAIT_S)
            except Exception:  # the watcher must outlive one failed poll
                logger.exception("watching discovery for list changes failed")
            await asyncio.sleep(interval_s)

    async def _relay_list_changes(self, wait_s: float = 0.0) -> None:
        counters = await self._client.list_changed_counters(self._seen_changes, wait_s)
        previous, self._seen_changes = self._seen_changes, counters
        if previous is None:
            return
        changed = [kind for kind, seq in counters.items() if seq > previous.get(kind, 0)]
        if not changed:
            return
        self._catalogs_at, self._catalogs_changed = 0.0, True  # the next list reads afresh
        for kind in changed:
            await self.events.publish(_EVENTS[kind]())
        for connection in list(self._bus_sessions.keys()):
            if connection.protocol_version in MODERN_PROTOCOL_VERSIONS:
                continue  # 2026-07-28 clients listen on subscriptions/listen instead
            for kind in changed:
                with contextlib.suppress(Exception):  # a closed connection is simply skipped
                    await connection.outbound.notify(_LEGACY_NOTIFY[kind], None)

    # -- lists, from discovery ------------------------------------------------------

    async def catalogs(self) -> dict[str, Catalog]:
        if time.monotonic() - self._catalogs_at > _CATALOG_TTL_S:
            # One read for every request that finds them stale: under load each expiry
            # met dozens of requests at once, and each read was an actor call (measured:
            # 6 % of the gateway's CPU in B1, and most of the discovery actor's).
            if self._catalogs_read is None:
                self._catalogs_read = asyncio.ensure_future(self._read_catalogs())
            await asyncio.shield(self._catalogs_read)  # one caller's cancel is not all's
        return self._catalogs

    async def _read_catalogs(self) -> None:
        try:
            read_at, self._catalogs_changed = time.monotonic(), False
            fresh = await self._client.catalogs()
            # Unchanged catalogs keep their object, so what is built from them (the tools
            # index, the tasks support map) is not rebuilt twice a second for nothing.
            if _digests(fresh) != _digests(self._catalogs):
                self._catalogs = fresh
            if not self._catalogs_changed:  # else a list changed meanwhile: read again
                self._catalogs_at = read_at
        finally:
            self._catalogs_read = None

    async def tools_by_name(self) -> dict[str, dict[str, Any]]:
        # Asked on every tools/call (argument validation): rebuilt only when the catalogs are.
        catalogs = await self.catalogs()
        if self._tools_index[0] is not catalogs:
            tools = {tool["name"]: tool for tool in await self._aggregate("tools", "name")}
            self._tools_index = (catalogs, tools)
        return self._tools_index[1]

    def input_schema(self, name: str) -> dict[str, Any] | None:
        # Synchronous (the SDK's hook is): the index as last refreshed, at most one
        # catalog TTL old; a tool it does not know yet skips the header check, as the
        # SDK does for a tool its listing does not show.
        tool = self._tools_index[1].get(name)
        schema = tool.get("inputSchema") if tool is not None else None
        return schema if isinstance(schema, dict) else None

    async def _aggregate(self, field: str, key: str) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for catalog in (await self.catalogs()).values():
            for item in getattr(catalog, field):
                seen.setdefault(item[key], item)
        return list(seen.values())

    async def _list_tools(
        self, ctx: Ctx, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        tools = await self._aggregate("tools", "name")
        if self.tasks is not None:
            catalogs = await self.catalogs()
            tools = [self.tasks.listed_tool(tool, catalogs) for tool in tools]
        return types.ListToolsResult(tools=[types.Tool.model_validate(t) for t in tools])

    async def _list_resources(
        self, ctx: Ctx, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        resources = await self._aggregate("resources", "uri")
        return types.ListResourcesResult(
            resources=[types.Resource.model_validate(r) for r in resources]
        )

    async def _list_resource_templates(
        self, ctx: Ctx, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        templates = await self._aggregate("resource_templates", "uriTemplate")
        return types.ListResourceTemplatesResult(
            resource_templates=[types.ResourceTemplate.model_validate(t) for t in templates]
        )

    async def _list_prompts(
        self, ctx: Ctx, params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        prompts = await self._aggregate("prompts", "name")
        return types.ListPromptsResult(prompts=[types.Prompt.model_validate(p) for p in prompts])

    # -- calls, through the bus -----------------------------------------------------

    async def _call_tool(
        self, ctx: Ctx, params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        result = await self._forward(ctx, "tools/call", params.name)
        if result.get("resultType") == "input_required":
            return types.InputRequiredResult.model_validate(result)
        return types.CallToolResult.model_validate(result)

    async def _read_resource(
        self, ctx: Ctx, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult | types.InputRequiredResult:
        result = await self._forward(ctx, "resources/read", str(params.uri))
        if result.get("resultType") == "input_required":
            return types.InputRequiredResult.model_validate(result)
        return types.ReadResourceResult.model_validate(result)

    async def _get_prompt(
        self, ctx: Ctx, params: types.GetPromptRequestParams
    ) -> types.GetPromptResult | types.InputRequiredResult:
        result = await self._forward(ctx, "prompts/get", params.name)
        if result.get("resultType") == "input_required":
            return types.InputRequiredResult.model_validate(result)
        return types.GetPromptResult.model_validate(result)

    async def _complete(
        self, ctx: Ctx, params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        ref = params.ref
        name = ref.name if isinstance(ref, types.PromptReference) else str(ref.uri)
        return types.CompleteResult.model_validate(
            await self._forward(ctx, "completion/complete", name)
        )

    async def _subscribe(self, ctx: Ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
        await self._forward(ctx, "resources/subscribe", str(params.uri))
        return types.EmptyResult()

    async def _unsubscribe(
        self, ctx: Ctx, params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        await self._forward(ctx, "resources/unsubscribe", str(params.uri))
        return types.EmptyResult()

    async def _set_logging_level(
        self, ctx: Ctx, params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        # Kept per MCP session at the gateway: a worker's server is shared by many
        # sessions, so one session's level must not change what another receives.
        self._log_levels[_connection_of(ctx)] = _LOG_LEVELS.index(params.level)
        return types.EmptyResult()

    async def _forward(self, ctx: Ctx, method: str, name: str) -> dict[str, Any]:
        # Forwarded whole, 2026-07-28 envelope included: the worker's server must see
        # the caller's declared capabilities, and sealed requestState must arrive as is.
        params = dict(ctx.params or {})

        async def relay(message: Notification | Request) -> dict[str, Any] | None:
            return await self._relay(ctx, message)

        session = self._bus_session(ctx)
        handle = (_connection_of(ctx), ctx.request_id)
        pins = token_labels_of(request_state(ctx))
        return await self._send(
            session, method, params, name, relay, principal_of(ctx), handle, pins
        )

    # -- 2026-07-28 tool calls without the SDK's per-request machinery ----------------

    async def call_tool_directly(
        self,
        principal: str,
        version: str,
        params: dict[str, Any],
        state: MutableMapping[str, Any] | None,
        notify: Callable[[dict[str, Any]], Awaitable[None]],
        *,
        trace: TraceContext | None = None,
        request_id: object = None,
    ) -> dict[str, Any]:
        """Serve a 2026-07-28 ``tools/call`` the SDK's checks already passed; its result.

        What the SDK's handler chain does for this method, done directly: the policy
        chain, the forward through the bus, and the SDK's own result shaping (the
        version's schema sieve, ``resultType``, the ``serverInfo`` stamp). ``notify``
        receives each notification about the call as a JSON-RPC object; the era has no
        server-to-client requests, so one is refused as the SDK refuses it. ``trace`` is
        the caller's trace context (``_meta`` or HTTP headers, see
        :mod:`cluster.gateway.tracing`); ``request_id`` its JSON-RPC id, for the span.

        Raises:
            MCPError: the call's JSON-RPC error.
        """
        name = str(params["name"])

        async def relay(message: Notification | Request) -> dict[str, Any] | None:
            if isinstance(message, Request):
                refused = NoBackChannelError(message.method)
                raise CallError(message.method, refused.code, refused.message, refused.data)
            if message.method != CLOSE_SSE_STREAM:  # no resumable stream in this era
                wire = message.to_json_dict()
                _server_notification.validate_python(wire)  # what the SDK path checks
                await notify(wire)
            return None

        async def serve() -> dict[str, Any]:
            forwarded = params
            if self.tasks is not None:
                # The legacy params.task means nothing on this era: stripped, ignored.
                forwarded = {k: v for k, v in params.items() if k != "task"}
                declared = declares_tasks_in_meta(params)
                created = await self.tasks.call_2026(principal, forwarded, declared)
                if created is not None:
                    return shaped_result(self.server, "tools/call", version, created)
            session = self._principal_session(principal)
            pins = token_labels_of(state)
            result = await self._send(
                session, "tools/call", forwarded, name, relay, principal, None, pins
            )
            # As _call_tool's models do on the SDK path: defaults filled, then shaped.
            model = _CALL_RESULTS[result.get("resultType") == "input_required"]
            typed = model.model_validate(result).model_dump(
                by_alias=True, mode="json", exclude_none=True
            )
            return shaped_result(self.server, "tools/call", version, typed)

        with gateway_hop(
            "tools/call", params, trace, protocol_version=version, request_id=request_id
        ) as hop:
            result: dict[str, Any] = await self.policy.enforce(
                principal, "tools/call", params, state, serve
            )
            hop.result(result)
        return result

    def _principal_session(self, principal: str) -> BusSession:
        # A stateless-era call has no MCP connection to hang a session on: one bus
        # session per principal keeps ids apart and costs nothing per call.
        session = self._direct_sessions.get(principal)
        if session is None:
            session = self._client.new_session(principal=principal)

            async def unsolicited(notification: Notification) -> None:
                # Nobody listens on a stateless call's stream after it ended; resource
                # updates still reach subscriptions/listen streams.
                if notification.method == "notifications/resources/updated":
                    params = notification.params if isinstance(notification.params, dict) else {}
                    await self.events.publish(ResourceUpdated(uri=str(params.get("uri"))))

            session.notification_handler = unsolicited
            self._direct_sessions[principal] = session
        return session

    async def _send(
        self,
        session: BusSession,
        method: str,
        params: dict[str, Any],
        name: str,
        relay: MessageHandler,
        principal: str,
        handle: Hashable | None = None,
        token_pins: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        trace = forwarded_trace()
        try:
            asked = labels_in_meta(params)
            key = idempotency_key_in_meta(params) if method == "tools/call" else None
        except ValueError as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from None
        pinned = {**self._pinned.get(principal, {}), **(token_pins or {})}
        if (conflict := label_conflict(pinned, asked)) is not None:
            region = asked.get("region")
            data = {"region": region, "tool": name, "reason": "conflict"}
            raise MCPError(BusErrorCode.REGION_REFUSED, f"region refused: {conflict}", data)
        labels = {**asked, **pinned}

        def call(relayed: MessageHandler) -> Coroutine[Any, Any, dict[str, Any]]:
            return session.request(
                method,
                params,
                name=name,
                timeout_s=self._call_timeout_s,
                on_message=relayed,
                traceparent=trace.traceparent if trace is not None else None,
                tracestate=trace.tracestate if trace is not None else None,
                labels=labels or None,
                idempotency_key=key,
            )

        try:
            if key is None:
                return await call(relay)
            # The principal scopes the key at the worker (envelope principal): one
            # principal never gets another's stored answer.
            return await self._keyed_calls.run(call, relay, handle)
        except CallError as exc:
            raise MCPError(exc.code, exc.message, exc.data) from None
        except BusTimeout as exc:
            raise MCPError(BusErrorCode.DEADLINE_EXCEEDED, str(exc)) from None
        except ConnectionClosed as exc:
            raise MCPError(BusErrorCode.SHUTTING_DOWN, str(exc)) from None
        except InvalidMessage as exc:
            # Parameters the bus cannot carry (NaN, Infinity): the front's codec checks
            # refuse them first; this covers fronts without them (stdio).
            raise MCPError(INVALID_PARAMS, f"params cannot be sent: {exc.detail}") from None

    def _bus_session(self, ctx: Ctx) -> BusSession:
        # One bus session per MCP connection (the SDK makes a ServerSession per request).
        connection = _connection_of(ctx)
        session = self._bus_sessions.get(connection)
        if session is None:
            session = self._client.new_session(principal=principal_of(ctx))
            target = weakref.ref(connection)

            async def unsolicited(notification: Notification) -> None:
                params = notification.params if isinstance(notification.params, dict) else {}
                if notification.method == "notifications/resources/updated":
                    await self.events.publish(ResourceUpdated(uri=str(params.get("uri"))))
                live = target()
                if live is not None:
                    await live.outbound.notify(notification.method, params or None)

            session.notification_handler = unsolicited
            self._bus_sessions[connection] = session
            # The bus session lives exactly as long as the MCP connection.
            weakref.finalize(connection, session.forget)
        return session

    async def _relay(self, ctx: Ctx, message: Notification | Request) -> dict[str, Any] | None:
        wire = message.to_json_dict()
        if isinstance(message, Notification):
            if message.method == CLOSE_SSE_STREAM:
                if ctx.close_sse_stream is not None:
                    await ctx.close_sse_stream()
                return None
            if message.method == "notifications/message" and not self._log_allowed(ctx, message):
                return None
            notification = _server_notification.validate_python(wire)
            await ctx.session.send_notification(notification, related_request_id=ctx.request_id)
            return None
        del wire["id"]
        try:
            request = _server_request.validate_python(wire)
            result = await ctx.session.send_request(
                request,
                _AnyResult,
                metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
            )
        except MCPError as exc:
            raise CallError(message.method, exc.code, exc.message, exc.data) from None
        answer: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        return answer

    def _log_allowed(self, ctx: Ctx, message: Notification) -> bool:
        threshold = self._log_levels.get(_connection_of(ctx))
        if threshold is None:
            return True
        level = message.params.get("level") if isinstance(message.params, dict) else None
        return level in _LOG_LEVELS and _LOG_LEVELS.index(level) >= threshold


def _connection_of(ctx: Ctx) -> Connection:
    """The MCP connection a request arrived on (one per client session, or per request
    in the stateless era). The SDK exposes it on its per-request session only privately."""
    connection: Connection = ctx.session._connection
    return connection


def _digests(catalogs: dict[str, Catalog]) -> dict[str, str]:
    return {pool: catalog.digest for pool, catalog in catalogs.items()}
