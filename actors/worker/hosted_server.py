"""One MCP server session shared by every client a worker serves.

The worker is the MCP *client* of its server: it performs the handshake once, then
forwards calls from many bus clients over the one session. Because JSON-RPC ids and
progress tokens are only unique per client, every forwarded request gets a session-local
id and progress token, mapped back on the way out. Whatever the server sends about a
request (progress, logs, sampling / elicitation / roots requests) goes to the client that
owns that request, and that client's answer comes back to the server with the server's
own id. A server that dies fails its in-flight calls with ``UPSTREAM_FAILED`` and is
restarted with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from actors.discovery.catalog import Catalog
from actors.discovery.exposure import SHOW_ALL, PoolExposure, Refusal
from actors.tracing import SpanKind, end_envelope_hop, envelope_hop, with_trace_meta
from actors.worker.request_params import (
    MODERN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    PROTOCOL_VERSION_META_KEY,
    is_modern,
    with_local_progress_token,
    without_envelope,
)
from actors.worker.server_links import ServerLink
from transports.envelope import CorrelationKey, Envelope
from transports.errors import INVALID_PARAMS, METHOD_NOT_FOUND, BusError, BusErrorCode
from transports.frame import Frame
from transports.message import JSONRPCId, Notification, Request, Response, TransportMessage
from transports.tracecontext import TraceContext

__all__ = ["CLOSE_SSE_STREAM", "HostedServer", "OutboundSink"]

logger = logging.getLogger(__name__)

_LIST_KINDS = {
    "notifications/tools/list_changed": "tool",
    "notifications/prompts/list_changed": "prompt",
    "notifications/resources/list_changed": "resource",
}
CLIENT_CAPABILITIES: dict[str, Any] = {
    "sampling": {},
    "elicitation": {"form": {}, "url": {}},
    "roots": {"listChanged": True},
}
_HANDSHAKE_TIMEOUT_S = 30.0
_LIST_METHODS = {
    "tools": ("tools/list", "tools"),
    "resources": ("resources/list", "resources"),
    "resource_templates": ("resources/templates/list", "resourceTemplates"),
    "prompts": ("prompts/list", "prompts"),
}

OutboundSink = Callable[[str, Frame], None]

# Sent to a call's owner when the server asks to close the client's SSE stream for that
# call (SEP-1699 polling); a gateway acts on it and never forwards it to its client.
CLOSE_SSE_STREAM = "notifications/raybus/close_sse_stream"


@dataclass
class _Call:
    frame: Frame | None  # None for the worker's own requests (handshake, lists)
    original_id: JSONRPCId | None
    progress_token: Any
    future: asyncio.Future[Response | None]
    link: ServerLink | None = None
    cancelled: bool = False


class HostedServer:
    """Drives one :class:`ServerLink`; see the module docstring.

    Args:
        link_factory: makes a fresh link (called again for each restart).
        modern_link_factory: makes a link for 2026-07-28 requests, which carry their
            own envelope (client info, capabilities) per request and so can share one
            stateless connection; None for servers that only speak the handshake era
            (their requests lose the envelope and go over the handshake session).
        sink: ``sink(destination, frame)`` sends a frame to a client endpoint.
        address: where clients send their answers to server requests (the worker).
        on_catalog_changed: called after the server's lists changed and were re-read.
        exposure: the pool's namespace and tool filters: ``catalog`` shows the public
            names, and calls by them reach the server under its own names.
    """

    def __init__(
        self,
        link_factory: Callable[[], ServerLink],
        *,
        modern_link_factory: Callable[[], ServerLink] | None = None,
        sink: OutboundSink,
        address: str,
        on_catalog_changed: Callable[[], None] = lambda: None,
        on_list_changed: Callable[[str], None] = lambda kind: None,
        restart_backoff_s: tuple[float, float] = (0.5, 30.0),
        exposure: PoolExposure = SHOW_ALL,
    ) -> None:
        self._exposure = exposure
        self._link_factory = link_factory
        self._modern_factory = modern_link_factory
        self._modern: ServerLink | None = None
        self._modern_lock = asyncio.Lock()
        self._sink = sink
        self._address = address
        self._span_extra = (("raybus.worker", address),)
        self._on_catalog_changed = on_catalog_changed
        self._on_list_changed = on_list_changed
        self._backoff_min_s, self._backoff_max_s = restart_backoff_s
        self._ids = itertools.count(1)
        self._link: ServerLink | None = None
        self._calls: dict[int, _Call] = {}
        self._by_key: dict[CorrelationKey, int] = {}
        self._server_requests: dict[str, tuple[JSONRPCId, ServerLink]] = {}
        # uri -> envelopes of the sessions subscribed to it through this worker
        self._subscribers: dict[str, dict[tuple[str, str], Envelope]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self._started = False  # restarts only after a first successful start
        self._reconnecting = False  # one restart loop at a time
        self._lost_reason: str | None = None
        self.connected = asyncio.Event()
        self.catalog = Catalog.of()
        self.server_info: dict[str, Any] = {}
        self.restarts = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and handshake; raises if the first connection fails."""
        await self._connect()
        self._started = True

    async def _connect(self) -> None:
        link = self._link_factory()
        await link.open()
        self._link = link
        self._reader = asyncio.create_task(self._read_loop(link))
        try:
            async with asyncio.timeout(_HANDSHAKE_TIMEOUT_S):
                init = await self._request(
                    "initialize",
                    {
                        "protocolVersion": PROTOCOL_VERSION,
                        "capabilities": CLIENT_CAPABILITIES,
                        "clientInfo": {"name": "raybus-worker", "version": "0.1.0"},
                    },
                )
                self.server_info = init
                await link.send(Notification(method="notifications/initialized"))
                await self._refresh_catalog()
        except (BusError, TimeoutError):
            await link.close()
            raise
        self.connected.set()

    async def close(self) -> None:
        self._closing = True
        self.connected.clear()
        if self._modern is not None:
            await self._modern.close()
        if self._link is not None:
            await self._link.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._fail_all("worker shut down", BusErrorCode.SHUTTING_DOWN)

    # -- calls -----------------------------------------------------------------------

    async def call(self, frame: Frame, timeout_s: float | None) -> Response | None:
        """Forward one client request; returns its response (None if cancelled).

        The response carries the client's own JSON-RPC id. Deadline, cancellation and
        server failure all end in a response too, so the caller always has one outcome.
        """
        request = frame.decode()
        if not isinstance(request, Request):
            raise ValueError("only requests are forwarded to the server")
        mapped = self._exposure.to_server(request)
        if isinstance(mapped, Refusal):  # a hidden tool, or a name of another pool
            return Response.failure(request.id, INVALID_PARAMS, mapped.message)
        request = mapped
        hop = envelope_hop(frame.envelope, SpanKind.CLIENT, extra=self._span_extra)
        response: Response | None = None
        try:
            response = await self._forward(frame, request, hop.forward, timeout_s)
            return response
        finally:
            end_envelope_hop(hop, response)

    async def _forward(
        self,
        frame: Frame,
        request: Request,
        trace: TraceContext | None,
        timeout_s: float | None,
        *,
        resend: bool = True,
    ) -> Response | None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        link = self._link
        if link is None or not self.connected.is_set():
            return Response.failure(
                request.id, BusErrorCode.UPSTREAM_FAILED, "MCP server is restarting"
            )
        # Booked before the first await: a cancel that arrives while the modern link
        # opens (the first such call on a worker, long under load) finds the call and
        # it is never sent, where it used to run to its end.
        local_id = next(self._ids)
        call = _Call(frame, request.id, None, loop.create_future())
        self._calls[local_id] = call
        key = frame.envelope.correlation_key
        self._by_key[key] = local_id

        async def close_stream() -> None:
            self._emit(call, Notification(method=CLOSE_SSE_STREAM))

        try:
            params = request.params
            if is_modern(params) and self._modern_factory is not None:
                link = await self._modern_link()
            else:
                params = without_envelope(params)
            if call.cancelled:
                return None
            # The server's own span (an SDK server makes one) is a child of the worker's.
            params = with_trace_meta(params, trace)
            params, call.progress_token = with_local_progress_token(params, local_id)
            call.link = link
            await link.send(
                Request(id=local_id, method=request.method, params=params), close_stream
            )
            async with asyncio.timeout(timeout_s):
                response = await call.future
            if resend and _never_reached(link, local_id):
                return await self._resend(call, request, trace, deadline)
            if response is not None and response.error is None:
                self._track_subscription(request, frame.envelope)
            return response
        except TimeoutError:
            await self._tell_cancelled(local_id, "deadline exceeded", link)
            return Response.failure(
                request.id, BusErrorCode.DEADLINE_EXCEEDED, "deadline exceeded while the tool ran"
            )
        except BusError as exc:
            return Response.failure(
                request.id, BusErrorCode.UPSTREAM_FAILED, f"MCP server unreachable: {exc}"
            )
        finally:
            self._calls.pop(local_id, None)
            self._by_key.pop(key, None)

    async def _resend(
        self, call: _Call, request: Request, trace: TraceContext | None, deadline: float | None
    ) -> Response | None:
        """Send a call again on the next session: its link says the server never saw it
        (its session had expired), so this cannot run it twice."""
        assert call.frame is not None
        try:
            async with asyncio.timeout_at(deadline):
                await self.connected.wait()
        except TimeoutError:
            message = "deadline exceeded while the MCP server reconnected"
            return Response.failure(request.id, BusErrorCode.DEADLINE_EXCEEDED, message)
        if call.cancelled:
            return None
        remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
        return await self._forward(call.frame, request, trace, remaining, resend=False)

    async def cancel(self, key: CorrelationKey) -> bool:
        """Cancel a forwarded call; the server is told and the call resolves as None."""
        local_id = self._by_key.get(key)
        call = self._calls.get(local_id) if local_id is not None else None
        if call is None or local_id is None:
            return False
        call.cancelled = True
        if call.link is not None:  # else never sent: the server has nothing to stop
            await self._tell_cancelled(local_id, "cancelled by the client", call.link)
        if not call.future.done():
            call.future.set_result(None)
        return True

    async def answer(self, frame: Frame) -> None:
        """A client's response to a server-to-client request: pass it to the server."""
        response = frame.decode()
        if not isinstance(response, Response) or not isinstance(response.id, str):
            return
        entry = self._server_requests.pop(response.id, None)
        if entry is None:
            logger.debug("answer to unknown server request %s dropped", response.id)
            return
        server_id, link = entry
        if link is self._link:
            with contextlib.suppress(BusError):
                await link.send(response.model_copy(update={"id": server_id}))

    def _track_subscription(self, request: Request, envelope: Envelope) -> None:
        if request.method not in ("resources/subscribe", "resources/unsubscribe"):
            return
        uri = request.params.get("uri") if isinstance(request.params, dict) else None
        if not isinstance(uri, str) or envelope.reply_to is None:
            return
        who = (envelope.reply_to, envelope.client_id)
        if request.method == "resources/subscribe":
            self._subscribers.setdefault(uri, {})[who] = replace(envelope, request_id="")
        else:
            self._subscribers.get(uri, {}).pop(who, None)

    @property
    def in_flight(self) -> int:
        return sum(1 for c in self._calls.values() if c.frame is not None)

    # -- internals -------------------------------------------------------------------

    async def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        link = self._link
        assert link is not None
        local_id = next(self._ids)
        call = _Call(None, None, None, asyncio.get_running_loop().create_future())
        self._calls[local_id] = call
        try:
            await link.send(Request(id=local_id, method=method, params=params))
            response = await call.future
        finally:
            self._calls.pop(local_id, None)
        if response is None or response.error is not None or not isinstance(response.result, dict):
            # None: the connection was lost, and why (exit code, stderr) is the reason.
            detail = (
                response.error.message
                if response and response.error
                else self._lost_reason or "no result"
            )
            raise BusError(f"{method} failed: {detail}")
        return response.result

    async def _refresh_catalog(self) -> None:
        capabilities = self.server_info.get("capabilities", {})
        lists: dict[str, list[dict[str, Any]]] = {}
        for field_name, (method, member) in _LIST_METHODS.items():
            capability = "resources" if field_name == "resource_templates" else field_name
            if capability not in capabilities:
                continue
            items: list[dict[str, Any]] = []
            cursor: str | None = None
            for _ in range(1000):  # bounded pagination
                page = await self._request(method, {"cursor": cursor} if cursor else {})
                items.extend(page.get(member, []))
                cursor = page.get("nextCursor")
                if not cursor:
                    break
            lists[field_name] = items
        self.catalog = self._exposure.expose(Catalog.of(**lists))

    async def _modern_link(self) -> ServerLink:
        async with self._modern_lock:
            if self._modern is None:
                link = self._modern_factory() if self._modern_factory else None
                assert link is not None
                await link.open()
                self._modern = link
                self._spawn(self._read_loop(link))
                await self._listen(link)
            return self._modern

    async def _listen(self, link: ServerLink) -> None:
        """Open a subscriptions/listen stream: 2026-07-28 servers announce list changes
        only to listeners, never on the request that caused them."""
        local_id = next(self._ids)
        self._calls[local_id] = _Call(
            None, None, None, asyncio.get_running_loop().create_future(), link
        )
        params = {
            "notifications": {
                "toolsListChanged": True,
                "promptsListChanged": True,
                "resourcesListChanged": True,
            },
            "_meta": {
                PROTOCOL_VERSION_META_KEY: MODERN_PROTOCOL_VERSION,
                "io.modelcontextprotocol/clientInfo": {"name": "raybus-worker", "version": "0.1.0"},
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        }
        await link.send(Request(id=local_id, method="subscriptions/listen", params=params))

    async def _tell_cancelled(self, local_id: int, reason: str, link: ServerLink | None) -> None:
        link = link or self._link
        if link is None:
            return
        with contextlib.suppress(BusError):
            await link.send(
                Notification(
                    method="notifications/cancelled",
                    params={"requestId": local_id, "reason": reason},
                )
            )

    async def _read_loop(self, link: ServerLink) -> None:
        try:
            while True:
                message, related = await link.receive()
                try:
                    await self._on_server_message(link, message, related)
                except Exception:  # one bad message must not stop the session
                    logger.exception("failed to handle a message from the MCP server")
        except BusError as exc:
            if link is self._modern:
                self._modern = None  # reopened on the next 2026-07-28 request
                self._fail_all(
                    f"MCP server connection lost: {exc}", BusErrorCode.UPSTREAM_FAILED, link
                )
                return
            if link is not self._link or self._closing:
                return
            self._lost_reason = f"MCP server connection lost: {exc}"
            self.connected.clear()
            self._fail_all(self._lost_reason, BusErrorCode.UPSTREAM_FAILED)
            if not self._started:
                return  # the first connection failed: start() reports it, nothing restarts
            logger.warning("%s", self._lost_reason)
            if not self._reconnecting:  # a restart that failed is retried by its own loop
                self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        self._reconnecting = True
        try:
            await self._reconnect_with_backoff()
        finally:
            self._reconnecting = False

    async def _reconnect_with_backoff(self) -> None:
        delay = self._backoff_min_s
        while not self._closing:
            await asyncio.sleep(delay)  # backoff between restarts, not synchronisation
            try:
                await self._connect()
            except (BusError, OSError, TimeoutError) as exc:
                logger.warning("MCP server restart failed (%s); next try in %.1f s", exc, delay)
                delay = min(delay * 2, self._backoff_max_s)
                continue
            self.restarts += 1
            logger.info("MCP server restarted (restart %d)", self.restarts)
            self._on_catalog_changed()
            return

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)  # keep a reference: the loop holds tasks weakly
        task.add_done_callback(self._background.discard)

    def _fail_all(self, reason: str, code: int, link: ServerLink | None = None) -> None:
        for call in list(self._calls.values()):
            if link is not None and call.link is not link:
                continue
            if not call.future.done():
                call.future.set_result(
                    Response.failure(call.original_id, code, reason)
                    if call.original_id is not None
                    else None
                )
        self._server_requests.clear()

    async def _on_server_message(
        self, link: ServerLink, message: TransportMessage, related: JSONRPCId | None
    ) -> None:
        if isinstance(message, Response):
            call = self._calls.get(message.id) if isinstance(message.id, int) else None
            if call is None:
                logger.debug("response to unknown id %r dropped", message.id)
            elif not call.future.done():
                outcome = (
                    message
                    if call.original_id is None
                    else message.model_copy(update={"id": call.original_id})
                )
                call.future.set_result(outcome)
            return
        if isinstance(message, Request):
            await self._on_server_request(link, message, related)
            return
        await self._on_notification(message, related)

    def _owner(self, related: JSONRPCId | None) -> _Call | None:
        if isinstance(related, str) and related.isdigit():
            related = int(related)  # the SDK may stringify the id it relates to
        if isinstance(related, int):
            call = self._calls.get(related)
            if call is not None and call.frame is not None:
                return call
        # Sent calls only: one still waiting for its link has nothing from the server yet.
        client_calls = [
            c for c in self._calls.values() if c.frame is not None and c.link is not None
        ]
        # Without a relation, only an unambiguous owner may receive it: never guess.
        return client_calls[0] if related is None and len(client_calls) == 1 else None

    def _emit(self, owner: _Call, message: TransportMessage, **envelope_changes: Any) -> None:
        assert owner.frame is not None
        envelope = owner.frame.envelope
        if envelope.reply_to is None:
            return
        self._sink(envelope.reply_to, Frame.of(replace(envelope, **envelope_changes), message))

    async def _on_server_request(
        self, link: ServerLink, request: Request, related: JSONRPCId | None
    ) -> None:
        if request.method == "ping":
            await link.send(Response.success(request.id, {}))
            return
        owner = self._owner(related)
        if owner is None:
            await link.send(
                Response.failure(
                    request.id, METHOD_NOT_FOUND, f"{request.method} has no client to answer it"
                )
            )
            return
        token = f"{self._address}#{next(self._ids)}"
        self._server_requests[token] = (request.id, link)
        self._emit(
            owner,
            Request(id=token, method=request.method, params=request.params),
            reply_to=self._address,
        )

    async def _on_notification(self, notification: Notification, related: JSONRPCId | None) -> None:
        method = notification.method
        if method.endswith("/list_changed"):
            kind = _LIST_KINDS.get(method)
            if kind is not None:
                self._on_list_changed(kind)
            self._spawn(self._catalog_changed())
            return
        if method == "notifications/subscriptions/acknowledged":
            return
        if method == "notifications/resources/updated":
            uri = notification.params.get("uri") if isinstance(notification.params, dict) else None
            for envelope in list(self._subscribers.get(str(uri), {}).values()):
                if envelope.reply_to is not None:
                    self._sink(envelope.reply_to, Frame.of(envelope, notification))
            return
        params = notification.params if isinstance(notification.params, dict) else {}
        if method == "notifications/progress":
            token = params.get("progressToken")
            local_id = token if isinstance(token, int) else None
            owner = self._calls.get(local_id) if local_id is not None else None
            if owner is None or owner.frame is None:
                return
            self._emit(
                owner,
                Notification(
                    method=method, params={**params, "progressToken": owner.progress_token}
                ),
            )
            return
        owner = self._owner(related)
        if owner is not None:
            self._emit(owner, notification)
        else:
            logger.debug("notification %s with no owner dropped", method)

    async def _catalog_changed(self) -> None:
        try:
            await self._refresh_catalog()
        except BusError as exc:
            logger.warning("could not re-read the server's lists: %s", exc)
            return
        self._on_catalog_changed()


def _never_reached(link: ServerLink, request_id: int) -> bool:
    """Does ``link`` know the server never saw this request? (A remote server's link
    does, for a request refused for its expired session; the others cannot tell.)"""
    check = getattr(link, "never_reached", None)
    return bool(check is not None and check(request_id))
