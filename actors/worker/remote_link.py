"""A worker's link to a remote MCP server, over the SDK's Streamable HTTP client.

One link is one upstream session: the SDK's ``streamable_http_client`` runs the POSTs,
the server's GET stream (where ``list_changed`` and other unsolicited messages arrive)
and the session id; this link carries our JSON-RPC messages in and out of it, as the
other links do (:mod:`actors.worker.server_links`). Restarting a lost session is the
hosting session's job (:class:`~actors.worker.hosted_server.HostedServer`), as for a
crashed stdio server.

What goes upstream: the pool's configured headers on every request, and nothing of the
callers' (their credentials end at the gateway; a link has no way to send them).

Failures, each ending the link with one line naming the endpoint (never a header):

* the upstream cannot be reached (refused, reset, DNS, no connection within
  ``connect_timeout_s``): the SDK's transport fails as a whole, and so does the link;
  the server's GET stream failing to reopen says so too, without waiting for a call;
* the session expired (HTTP 404 on a request that carried the session id, as the spec
  says a server answers a session it no longer knows): the link ends and the hosting
  session reconnects with a fresh ``initialize``, then sends the refused request again
  (:meth:`RemoteServerLink.never_reached`: the server never ran it);
* the upstream takes a notification, an answer or a cancellation but does not
  acknowledge it within ``connect_timeout_s`` (servers answer those with 202 at once):
  the upstream is hung, and the link ends so its calls fail instead of waiting;
* an HTTP error status on a call (5xx, 401/403, 429, ...) turns that call's error into
  ``UPSTREAM_FAILED`` with the status, so the pool's breaker counts it; another 4xx
  (bad params, an unknown method) keeps the server's code, its message led by the
  status;
* a call whose response stream breaks (the upstream died mid-call) fails with
  ``UPSTREAM_FAILED`` too, where the SDK reports a connection-closed error.

Requests themselves have no read timeout: a long tool may be silent on its stream until
it ends, and the call's own deadline bounds it (the hosting session answers the caller
and cancels the call upstream).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import httpx2
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage
from mcp_types import CONNECTION_CLOSED, jsonrpc_message_adapter

from actors.worker.server_links import CloseStream, Related
from transports.codec import message_from_json
from transports.errors import BusErrorCode, ConnectionClosed, InvalidMessage
from transports.message import JSONRPCId, Response, TransportMessage

__all__ = ["RemoteServerLink"]

logger = logging.getLogger(__name__)

_SESSION_HEADER = "mcp-session-id"
# Statuses that say the upstream (or our configuration of it) failed, not the call.
_UPSTREAM_FAULTS = frozenset({401, 403, 407, 408, 429})
# How the SDK's transport words an error it made up for a call whose stream ended.
_BROKEN_STREAM = ("SSE stream", "server answered a request with 202")
# Kept open besides the calls: the GET stream, a notification, a cancellation.
_SPARE_CONNECTIONS = 4


class RemoteServerLink:
    """One session with a Streamable HTTP MCP server (see the module docstring).

    Args:
        url: The server's MCP endpoint.
        headers: Sent on every request (already resolved: values, not references).
        label: How logs and errors name the endpoint (no query, no credentials).
        max_connections: Calls this link runs at once (the pool's ``max_concurrency``),
            so the connection pool never makes a call wait for a connection.
        connect_timeout_s: Bound on connecting, on sending a request body, and on the
            upstream's acknowledgement of a notification or answer.
    """

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        label: str,
        max_connections: int,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._url = url
        self._headers = dict(headers)
        self.label = label
        self._max_connections = max_connections + _SPARE_CONNECTIONS
        self._connect_timeout_s = connect_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._write: Any = None
        self._inbox: asyncio.Queue[tuple[TransportMessage, Related] | None] = asyncio.Queue()
        self._ready = asyncio.Event()
        self._lost: str | None = None
        self._closing = False
        # Request id -> the HTTP status that failed it (set before the SDK reports it).
        self._http_failures: dict[JSONRPCId, int] = {}
        self._unseen: set[JSONRPCId] = set()

    async def open(self) -> None:
        """Start the transport. Nothing is sent yet: the first request (``initialize``)
        connects, and a failure to connect ends that request and the link."""
        self._task = asyncio.create_task(self._run())
        await self._ready.wait()
        if self._lost is not None:
            raise ConnectionClosed(self._lost)

    async def send(
        self, message: TransportMessage, close_stream: CloseStream | None = None
    ) -> None:
        write = self._write
        if write is None or self._lost is not None:
            raise ConnectionClosed(self._lost or f"upstream {self.label} is not connected")
        item = SessionMessage(jsonrpc_message_adapter.validate_python(message.to_json_dict()))
        try:
            # The transport takes a message once its previous notification was sent: a
            # hung upstream holds it, and the link ends rather than hold the caller.
            async with asyncio.timeout(self._connect_timeout_s):
                await write.send(item)
        except TimeoutError:
            reason = f"upstream {self.label} stopped taking messages"
            self._end(reason)
            raise ConnectionClosed(reason) from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            reason = self._lost or f"upstream {self.label} stopped answering"
            self._end(reason)
            raise ConnectionClosed(reason) from None

    def never_reached(self, request_id: JSONRPCId) -> bool:
        """Did the server refuse this request with its expired session (so never run it)?
        The hosting session then sends it again on the next session."""
        return request_id in self._unseen

    async def receive(self) -> tuple[TransportMessage, Related]:
        if self._task is None:
            raise ConnectionClosed(f"upstream {self.label} not started")
        item = await self._inbox.get()
        if item is None:
            self._inbox.put_nowait(None)  # every later receive ends the same way
            raise ConnectionClosed(self._lost or f"upstream {self.label} closed the session")
        return item

    async def close(self) -> None:
        self._closing = True
        if self._write is not None:
            # Ends the transport's writer, then its reader: the SDK then ends the
            # session upstream (DELETE) on its way out.
            await self._write.aclose()
        if self._task is not None:
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)

    # -- internals -------------------------------------------------------------------

    def _client(self) -> httpx2.AsyncClient:
        # No read timeout by default: the GET stream idles between notifications, and
        # a call's deadline bounds a request (see _on_request for the rest).
        timeout = httpx2.Timeout(self._connect_timeout_s, read=None, pool=None)
        limits = httpx2.Limits(max_connections=self._max_connections)
        return httpx2.AsyncClient(
            headers=self._headers,
            timeout=timeout,
            transport=_StreamWatch(self._stream_lost, limits=limits),
            event_hooks={"request": [self._on_request], "response": [self._on_response]},
        )

    def _stream_lost(self, exc: httpx2.TransportError) -> None:
        self._end(_describe(exc, self.label, self._connect_timeout_s))

    async def _run(self) -> None:
        try:
            async with (
                self._client() as client,
                streamable_http_client(self._url, http_client=client) as (read, write),
            ):
                self._write = write
                self._ready.set()
                async for item in read:
                    if isinstance(item, Exception):
                        logger.warning("upstream %s: %s", self.label, item)
                        continue
                    self._deliver(item)
                # The transport's writer gave up (an unacknowledged notification): the
                # session is lost now, before the SDK's goodbye to it (bounded) below.
                self._give_up(f"upstream {self.label} stopped answering")
        except Exception as exc:  # noqa: BLE001 - the transport ended: keep why
            self._lost = self._lost or _describe(exc, self.label, self._connect_timeout_s)
        finally:
            self._give_up(f"upstream {self.label} closed the session")

    def _give_up(self, reason: str) -> None:
        if self._lost is None and not self._closing:
            self._lost = reason
            logger.warning("%s", reason)
        self._ready.set()
        self._inbox.put_nowait(None)

    def _deliver(self, item: SessionMessage) -> None:
        wire = item.message.model_dump(mode="json", by_alias=True, exclude_unset=True)
        wire.setdefault("jsonrpc", "2.0")
        try:
            message = message_from_json(wire)
        except InvalidMessage as exc:
            logger.warning("upstream %s sent an invalid message: %s", self.label, exc)
            return
        if isinstance(message, Response) and message.error is not None:
            error = message.error
            status = self._http_failures.pop(message.id, None) if message.id is not None else None
            if status is not None:
                # A 4xx the server explains (bad params, unknown method) keeps its code.
                code = (
                    BusErrorCode.UPSTREAM_FAILED
                    if status >= 500 or status in _UPSTREAM_FAULTS
                    else error.code
                )
                text = f"upstream {self.label} answered HTTP {status}: {error.message}"
                message = Response.failure(message.id, code, text, error.data)
            elif error.code == CONNECTION_CLOSED and error.message.startswith(_BROKEN_STREAM):
                # The SDK's word for a call whose response stream broke (the upstream
                # died or dropped the connection mid-call): the upstream failed.
                text = f"upstream {self.label} broke the call's stream: {error.message}"
                message = Response.failure(message.id, BusErrorCode.UPSTREAM_FAILED, text)
        self._inbox.put_nowait((message, None))

    async def _on_request(self, request: httpx2.Request) -> None:
        if request.method == "GET" or (request.method == "POST" and _is_request(request.content)):
            return
        # A notification, an answer or the session's DELETE is acknowledged at once: one
        # that is not means a hung upstream, which ends the session (and no later send
        # waits behind it).
        bounded = httpx2.Timeout(self._connect_timeout_s, pool=None)
        request.extensions = {**request.extensions, "timeout": bounded.as_dict()}

    async def _on_response(self, response: httpx2.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        request = response.request
        request_id = _request_id(request.content) if request.method == "POST" else None
        if status == 404 and request.method != "DELETE" and _SESSION_HEADER in request.headers:
            if request_id is not None:
                self._unseen.add(request_id)  # refused with the session: never run
            self._end(f"upstream {self.label} ended the session (HTTP 404); reconnecting")
            return
        if request_id is not None:
            self._http_failures[request_id] = status
        logger.info("upstream %s answered %s with HTTP %d", self.label, request.method, status)

    def _end(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
            logger.warning("%s", reason)
        if self._task is not None:
            self._task.cancel()


class _StreamWatch(httpx2.AsyncHTTPTransport):
    """Tells when the server's GET stream cannot be reopened: the SDK retries it twice,
    then gives up in silence, and the session would hear no more ``list_changed``."""

    def __init__(self, lost: Callable[[httpx2.TransportError], None], **options: Any) -> None:
        super().__init__(**options)
        self._lost = lost

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            return await super().handle_async_request(request)
        except httpx2.TransportError as exc:
            if request.method == "GET":
                self._lost(exc)
            raise


def _is_request(body: bytes) -> bool:
    return _request_id(body) is not None


def _request_id(body: bytes) -> JSONRPCId | None:
    """The id of the JSON-RPC request in ``body``; None for anything else."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or "method" not in data:
        return None
    found = data.get("id")
    return found if isinstance(found, str | int) and not isinstance(found, bool) else None


def _describe(exc: BaseException, label: str, connect_timeout_s: float) -> str:
    """One line saying why the transport ended: the first network error inside it."""
    for leaf in _leaves(exc):
        if isinstance(leaf, httpx2.ConnectTimeout):
            return f"upstream {label} did not accept a connection within {connect_timeout_s:g} s"
        if isinstance(leaf, httpx2.TimeoutException):
            return f"upstream {label} did not answer within {connect_timeout_s:g} s"
        if isinstance(leaf, httpx2.ConnectError):
            return f"cannot connect to upstream {label}: {leaf or 'connection failed'}"
        if isinstance(leaf, httpx2.TransportError):
            return f"upstream {label} broke the connection: {leaf or type(leaf).__name__}"
    leaf = next(iter(_leaves(exc)), exc)
    return f"upstream {label} failed: {type(leaf).__name__}: {leaf}"


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]
