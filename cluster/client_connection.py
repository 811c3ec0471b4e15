"""What the sessions of one client process share: the backend link, the calls waiting
for answers, and the handing of each frame that arrives to the call or session it is for.

:class:`~cluster.client.BusClient` is the API; this is its plumbing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actors.outbox import BUSY_INTERVAL_S, Outbox
from cluster.backends.base import ClientLink
from cluster.backends.ray import RouterSubmissions, RouterTook
from cluster.durable import AnswerBuffer
from cluster.naming import HandleCache
from transports.envelope import CorrelationKey
from transports.errors import (
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    BusError,
    BusErrorCode,
    CallError,
    ConnectionClosed,
    FramesNotSent,
)
from transports.frame import Frame
from transports.message import Notification, Request, Response

if TYPE_CHECKING:
    from cluster.client import BusClient

__all__ = [
    "ClientConnection",
    "MessageHandler",
    "Pending",
    "ProgressCallback",
    "ServerRequestHandler",
]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None] | None]
ServerRequestHandler = Callable[[Request], Awaitable[dict[str, Any]]]
# Per call: sees every notification and server request about that call (a gateway relays
# them to its own client); returns the result of a server request, None for notifications.
MessageHandler = Callable[[Notification | Request], Awaitable[dict[str, Any] | None]]


@dataclass
class Pending:
    method: str
    future: asyncio.Future[Response]
    progress: ProgressCallback | None
    on_message: MessageHandler | None = None
    router: str | None = None  # the incarnation of the router that accepted the call


# How often a client with calls held by a Ray router asks that router's incarnation. A
# client learns of a restart from the next batch a router takes, but with every later
# call on the direct lane there is none, and the calls the dead router held would wait
# for their deadline and the grace. Only while such calls wait: one actor call a second.
ROUTER_CHECK_S = 1.0


class ClientConnection:
    """What sessions of one client process share: the backend link and its receiver."""

    def __init__(self, bus: str, discovery: Any) -> None:
        self.bus = bus
        self.discovery = discovery
        self.link: ClientLink | None = None
        self.pending: dict[tuple[str, str], Pending] = {}
        self.sessions: dict[str, BusClient] = {}
        self.handles = HandleCache()
        self.submissions: Outbox[str, Frame] = Outbox(
            self._submit, on_failure=self._submit_failed, min_interval_s=BUSY_INTERVAL_S
        )
        self.answers: Outbox[str, Frame] = Outbox(self._send_answers)
        self.poller: asyncio.Task[None] | None = None
        self.router_watch: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.router: str | None = None  # the incarnation that accepted the last batch
        self.durable: AnswerBuffer | None = None  # answers no caller awaits (cluster.durable)
        self.id_prefix = ""  # a durable connection's incarnation

    def attach(self, link: ClientLink) -> None:
        self.link = link
        self.poller = asyncio.get_running_loop().create_task(link.receive())
        if isinstance(link, RouterSubmissions):
            link.on_rerouted = self._rerouted
        ask = getattr(link, "router_incarnation", None)
        if callable(ask):
            self.router_watch = asyncio.get_running_loop().create_task(self._watch_router(ask))

    def _rerouted(self, frames: list[Frame], submitted: Awaitable[object]) -> None:
        # Calls a worker bounced: a router that dies holding them fails them at once
        # (1004), as it does the calls this client submitted to it, not at their deadline.
        async def accepted() -> None:
            try:
                await self._accepted(frames, submitted)
            except Exception as exc:  # noqa: BLE001 - the batch never reached a router
                self._submit_failed("router", frames, exc)

        self._spawn(accepted())

    @property
    def _link(self) -> ClientLink:
        if self.link is None:
            raise ConnectionClosed("the client is not connected")
        return self.link

    @property
    def reply_to(self) -> str:
        return self._link.reply_to

    def _submit(self, _: str, frames: list[Frame]) -> Any:
        submitted = self._link.submit(frames)
        if submitted is None:
            return None
        # Only the calls the router took are its to lose (see RouterTook).
        took = submitted.frames if isinstance(submitted, RouterTook) else frames
        return self._accepted(took, submitted)

    async def _accepted(self, frames: list[Frame], submitted: Awaitable[object]) -> None:
        """Note which router took the batch; a new one means the last one died.

        A Ray router answers a batch with its incarnation (brokers answer nothing). The
        calls a router that died had accepted and not yet answered are failed at once
        with "may have run" (1004): those it still queued are lost with it and would
        otherwise wait for their deadline and the grace; those a worker already runs
        may still answer, but their caller cannot know which is which.
        """
        router = await submitted
        if not isinstance(router, str):
            return
        self._saw_router(router)
        for frame in frames:
            pending = self.pending.get((frame.envelope.client_id, frame.envelope.request_id))
            if pending is not None:
                pending.router = router

    async def _watch_router(self, ask: Callable[[], Awaitable[object]]) -> None:
        """Fail the calls a restarted router held, also when no batch tells (see
        ``ROUTER_CHECK_S``)."""
        while True:
            await asyncio.sleep(ROUTER_CHECK_S)  # a period: nothing to wait on
            held = self.router
            if held is None or not any(
                p.router == held and not p.future.done() for p in self.pending.values()
            ):
                continue
            try:
                async with asyncio.timeout(5 * ROUTER_CHECK_S):
                    current = await ask()
            except Exception:  # noqa: BLE001 - dead and not back yet: asked again next round
                continue
            if isinstance(current, str):
                self._saw_router(current)

    def _saw_router(self, router: str) -> None:
        """``router`` is the incarnation alive now: a new one means the last one died."""
        if self.router is not None and router != self.router:
            self._router_restarted(self.router)
        self.router = router

    def _router_restarted(self, old: str) -> None:
        logger.warning("the bus router restarted: failing the calls it held")
        for pending in self.pending.values():
            if pending.router == old and not pending.future.done():
                pending.future.set_exception(
                    CallError(
                        pending.method,
                        BusErrorCode.OUTCOME_UNKNOWN,
                        "the bus router restarted while it held the call: it may have run",
                    )
                )

    def cancel(self, keys: list[CorrelationKey]) -> None:
        self._link.cancel(keys)

    def _submit_failed(self, _: str, frames: list[Frame], exc: BaseException) -> None:
        reason = f"the bus router is unreachable: {exc}"
        if isinstance(exc, FramesNotSent):  # the batch's others went: they stay pending
            frames = [frame for frame in frames if frame.envelope.correlation_key in exc.keys]
            reason = str(exc)
        for frame in frames:
            pending = self.pending.get((frame.envelope.client_id, frame.envelope.request_id))
            if pending is not None and not pending.future.done():
                pending.future.set_exception(ConnectionClosed(reason))

    def _send_answers(self, destination: str, frames: list[Frame]) -> Any:
        return self.handles.get(destination).answer.remote(frames)

    async def _dispatch(self, frame: Frame) -> None:
        message = frame.decode()
        envelope = frame.envelope
        pending = self.pending.get((envelope.client_id, envelope.request_id))
        if isinstance(message, Response):
            if self.durable is not None and not self.durable.first_time(envelope):
                return  # a broker's redelivery of an answer this connection had
            if pending is not None and not pending.future.done():
                pending.future.set_result(message)
            elif self.durable is not None:  # an earlier connection's, or its caller gave up
                await self.durable.put(envelope, message)
            else:  # a late or duplicate answer (after a timeout or a redelivery): dropped
                logger.debug("dropped an answer for unknown call %s", envelope.correlation_key)
            return
        session = self.sessions.get(envelope.client_id)
        if pending is not None and pending.on_message is not None:
            await self._relay(frame, message, pending.on_message)
            return
        if isinstance(message, Notification):
            params = message.params if isinstance(message.params, dict) else {}
            if (
                message.method == "notifications/progress"
                and pending is not None
                and pending.progress is not None
            ):
                outcome = pending.progress(
                    params.get("progress", 0.0), params.get("total"), params.get("message")
                )
                if outcome is not None:
                    await outcome
            elif session is not None and session.notification_handler is not None:
                await session.notification_handler(message)
            elif session is not None:
                session.notifications.append(message)
            return
        handler = session.server_request_handler if session is not None else None
        self._spawn(self._answer(frame, message, handler))

    async def _relay(
        self, frame: Frame, message: Notification | Request, handler: MessageHandler
    ) -> None:
        if isinstance(message, Notification):
            await handler(message)  # inline: notifications keep their order
            return
        # A server request waits for a human or a model: answer it off the poll loop.
        self._spawn(self._answer(frame, message, handler))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self.tasks.discard)

    async def _answer(
        self,
        frame: Frame,
        message: Request,
        handler: MessageHandler | ServerRequestHandler | None,
    ) -> None:
        if frame.envelope.reply_to is None:
            return
        if handler is None:
            answer = Response.failure(
                message.id, METHOD_NOT_FOUND, f"this client does not handle {message.method}"
            )
        else:
            try:
                answer = Response.success(message.id, await handler(message) or {})
            except CallError as exc:
                answer = Response.failure(message.id, exc.code, exc.message, exc.data)
            except BusError as exc:
                answer = Response.failure(message.id, INTERNAL_ERROR, str(exc))
        self.answers.put(frame.envelope.reply_to, Frame.of(frame.envelope, answer))

    async def close(self) -> None:
        for task in (self.poller, self.router_watch):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for pending in self.pending.values():
            if not pending.future.done():
                pending.future.set_exception(ConnectionClosed("client closed"))
        self.pending.clear()
        if self.link is not None:
            await self.link.close()  # a durable link cancels no call: answers wait
        if self.durable is not None:
            await self.durable.close()
