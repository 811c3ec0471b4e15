"""2025-11-25 task input: a task's tool asks its caller mid-call, over ``tasks/result``.

Spec: ``basic/utilities/tasks`` of 2025-11-25, "Input Required Status" and "Result
Retrieval". A tool running as a task may ask its caller for input (the SDK's
``ctx.elicit``, sampling, roots). Its worker relays the request to the task store, which
parks it (``input_required``, :mod:`actors.tasks.inputs`) exactly as for a 2026-07-28
task; only the way to the caller differs:

* ``tasks/get`` shows ``input_required`` (the era's ``Task`` has no ``inputRequests``:
  "the requestor should call ``tasks/result`` to receive input requests").
* ``tasks/result`` on a task that is not terminal sends every parked request to the
  client on that call's own SSE stream, as a server-to-client request carrying the
  ``io.modelcontextprotocol/related-task`` ``_meta`` ("MUST include"), and keeps
  blocking until the task ends. The client answers with an ordinary JSON-RPC response
  POSTed to its session; a result goes to the store's ``respond`` path, an error to
  ``fail_input`` (the tool's ``ctx.elicit`` raises it). Once nothing is outstanding the
  task is ``working`` again ("typically back to working").
* **Ids**: each relayed request gets an id minted here (``raybus-input.<random>``) and is
  sent on the SDK's per-connection dispatcher, exactly where the gateway's ordinary
  relays go (``Gateway._relay``): an answer is matched only within the MCP session the
  request went to, never across sessions, and the worker's own id never leaves the bus.
  Over HTTP, :class:`TaskInputGuard` refuses (400, one JSON-RPC error line) a response
  carrying such an id that this session is not waiting for (never sent here, sent to
  another session, already answered or withdrawn); the SDK itself would drop it silently.
* **Bounded**: a relayed request waits for its answer while the task runs and this
  ``tasks/result`` is open. It is withdrawn (the SDK sends ``notifications/cancelled``)
  when the task ends (cancelled, or failed at its run deadline: a client that never
  answers leaves the tool waiting no longer than that) or when another caller answered
  it. A ``tasks/result`` that closes leaves the request parked: the next one sends it
  again.
* Only a task whose client declared a capability to answer (``elicitation``,
  ``sampling`` or ``roots``) parks its tool's requests; any other task's requests are
  refused at once, so its tool fails fast instead of waiting for an answer nobody gives.
* Two ``tasks/result`` calls open on the same task both get the request; the first
  answer wins, the other request is withdrawn.
* **Capabilities**: nothing new is declared. The relayed requests are ordinary
  requests, not task-augmented ones, so the client's ``tasks.requests.elicitation`` /
  ``sampling`` capabilities play no part; the server's ``tasks.requests`` lists
  ``tools.call`` only, as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Mapping, MutableMapping
from typing import Any, Protocol

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp_types.jsonrpc import CONNECTION_CLOSED
from pydantic import TypeAdapter, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from actors.tasks.inputs import InputOutcome
from actors.tasks.model import RELATED_TASK_META, TaskRecord
from cluster.gateway.policy.http_guards import CLIENT_RESPONSE_ID, REFUSED
from transports.errors import INVALID_PARAMS, INVALID_REQUEST, CallError, ConnectionClosed

__all__ = ["RELAY_ID_PREFIX", "TaskInputGuard", "TaskInputRelay", "client_answers_input"]

logger = logging.getLogger(__name__)

Ctx = ServerRequestContext[Any, Any]

RELAY_ID_PREFIX = "raybus-input."
_SESSION_HEADER = "mcp-session-id"
# Each wait on the store is bounded; the loop re-reads the task after each one.
_WAIT_S = 30.0
# How long the result waits for withdrawn requests' notifications/cancelled to be sent.
_WITHDRAW_S = 10.0
_server_request = TypeAdapter[types.ServerRequest](types.ServerRequest)


class InputStore(Protocol):
    """What the relay needs of the task store (``TaskStorePort``'s input half)."""

    async def get(self, task_id: str, principal: str) -> TaskRecord: ...

    async def wait(
        self, task_id: str, principal: str, after_version: int, timeout_s: float
    ) -> TaskRecord: ...

    async def respond(self, task_id: str, principal: str, responses: object) -> InputOutcome: ...

    async def fail_input(
        self, task_id: str, principal: str, key: str, error: object
    ) -> InputOutcome: ...


def client_answers_input(ctx: Ctx) -> bool:
    """Did the 2025-11-25 client declare a capability to answer a tool's requests?"""
    capabilities = ctx.session.client_capabilities
    if capabilities is None:
        return False
    answering = (capabilities.elicitation, capabilities.sampling, capabilities.roots)
    return any(capability is not None for capability in answering)


def _session_of(ctx: Ctx) -> str | None:
    """The MCP session id of an HTTP request (None elsewhere: no guard there)."""
    headers = getattr(ctx.request, "headers", None)
    value = headers.get(_SESSION_HEADER) if headers is not None else None
    return value if isinstance(value, str) else None


class TaskInputRelay:
    """One per gateway: relays parked input requests of 2025-11-25 tasks on their
    callers' ``tasks/result`` streams, and knows which relay ids each MCP session may
    still answer (for :class:`TaskInputGuard`)."""

    def __init__(self) -> None:
        self._awaited: dict[str, set[str]] = {}

    def awaits(self, session: str | None, request_id: object) -> bool:
        """Is ``session`` waiting for an answer with this id?"""
        return session is not None and request_id in self._awaited.get(session, ())

    async def wait_for_result(
        self, ctx: Ctx, store: InputStore, task_id: str, principal: str
    ) -> TaskRecord:
        """Block until the task ends, relaying each parked request on ``ctx``'s stream.

        Raises:
            CallError: ``-32602`` for a task the caller cannot see.
            ConnectionClosed: the store is gone.
        """
        record = await store.get(task_id, principal)
        relays: dict[str, asyncio.Task[None]] = {}
        try:
            while not record.status.terminal:
                for key, relay in list(relays.items()):
                    if key not in record.input_requests and not relay.done():
                        relay.cancel()  # answered elsewhere: withdrawn from this client
                for key, asked in record.input_requests.items():
                    if key not in relays:  # each request once per tasks/result
                        relays[key] = asyncio.create_task(
                            self._relay(ctx, store, task_id, principal, key, asked)
                        )
                record = await store.wait(task_id, principal, record.version, _WAIT_S)
        finally:
            for relay in relays.values():
                relay.cancel()  # the task ended, or this tasks/result did
        pending = [relay for relay in relays.values() if not relay.done()]
        if pending:
            # Their withdrawals (notifications/cancelled) must travel before the result,
            # which ends this stream; each write is bounded by the SDK.
            await asyncio.wait(pending, timeout=_WITHDRAW_S)
        return record

    async def _relay(
        self,
        ctx: Ctx,
        store: InputStore,
        task_id: str,
        principal: str,
        key: str,
        asked: Mapping[str, Any],
    ) -> None:
        method = str(asked.get("method"))
        params = dict(asked.get("params") or {})
        # "The receiver MUST include the io.modelcontextprotocol/related-task metadata".
        params["_meta"] = {**(params.get("_meta") or {}), RELATED_TASK_META: {"taskId": task_id}}
        try:
            _server_request.validate_python({"method": method, "params": params})
        except ValidationError:
            error = {"code": INVALID_PARAMS, "message": f"{method} is not a request a client takes"}
            await self._tell_store(store.fail_input(task_id, principal, key, error))
            return
        relay_id = RELAY_ID_PREFIX + secrets.token_urlsafe(12)
        session = _session_of(ctx)
        if session is not None:
            self._awaited.setdefault(session, set()).add(relay_id)
        try:
            # The request-scoped channel: the request travels on this tasks/result's SSE
            # stream (what ServerSession.send_request does with a related request id),
            # with an id chosen here so the door can tell ours from strays.
            channel = ctx.session._request_outbound
            result = await channel.send_raw_request(method, params, {"request_id": relay_id})
        except NoBackChannelError:
            logger.info("task %s: input %s has no stream to travel on", task_id, key)
            return
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                return  # the client left: the request stays parked for the next caller
            error = {"code": exc.code, "message": exc.message, "data": exc.data}
            await self._tell_store(store.fail_input(task_id, principal, key, error))
            return
        finally:
            self._forget(session, relay_id)
        await self._tell_store(store.respond(task_id, principal, {key: result}))

    def _forget(self, session: str | None, relay_id: str) -> None:
        if session is None:
            return
        awaited = self._awaited.get(session)
        if awaited is not None:
            awaited.discard(relay_id)
            if not awaited:
                del self._awaited[session]

    @staticmethod
    async def _tell_store(answer: Any) -> None:
        try:
            outcome: InputOutcome = await answer
        except (CallError, ConnectionClosed) as exc:
            # The tool keeps waiting (bounded by its run deadline); nothing to answer.
            logger.warning("an input answer could not be delivered: %s", exc)
            return
        if outcome.ignored:
            logger.info("input(s) %s were no longer outstanding", ", ".join(outcome.ignored))


class TaskInputGuard:
    """ASGI middleware (inside :class:`JsonBodyGuard`): a POSTed JSON-RPC response with a
    relay id its session is not waiting for is refused with 400, before the SDK drops
    it silently (Streamable HTTP: "If the server cannot accept the input, it MUST return
    an HTTP error status code"). Other responses pass untouched."""

    def __init__(self, app: ASGIApp, relay: TaskInputRelay) -> None:
        self._app = app
        self._relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state: MutableMapping[str, Any] = scope.get("state") or {}
        response_id = state.get(CLIENT_RESPONSE_ID)
        if not (isinstance(response_id, str) and response_id.startswith(RELAY_ID_PREFIX)):
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self._relay.awaits(headers.get(_SESSION_HEADER), response_id):
            await self._app(scope, receive, send)
            return
        state[REFUSED] = "unknown_response_id"
        message = (
            f"no request with id {response_id!r} awaits an answer on this session "
            "(never sent to it, already answered, or withdrawn when its task ended)"
        )
        error = {"code": INVALID_REQUEST, "message": message}
        body = json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()
        start_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 400, "headers": start_headers})
        await send({"type": "http.response.body", "body": body})
