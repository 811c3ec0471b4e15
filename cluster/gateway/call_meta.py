"""A ``tools/call``'s idempotency key, read at the gateway; keyed calls outlive their caller.

A caller that may send a call twice (an edge device resending after a lost link) puts a
key in ``params._meta["io.raybus/idempotency-key"]``: a string of 1 to 200 printable
ASCII characters. The gateway checks it, hands it to the bus as the envelope's
idempotency key (the body travels unchanged) and the workers' ledger runs the call at
most once per key and principal (README "Idempotency keys").

A keyed call is not cancelled when its caller goes (HTTP disconnect, session closed):
its answer waits in the ledger for the resend. Only an explicit cancellation
(``notifications/cancelled`` on the 2025 eras) stops it; the 2026-07-28 era has no
cancellation but closing the stream, so there a keyed call always runs to its end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable, Mapping
from typing import Any, Final, TypeVar

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

from cluster.gateway.bus import MessageHandler
from transports.errors import BusErrorCode, CallError
from transports.message import Notification, Request

__all__ = [
    "EXTENSION",
    "MAX_KEY_CHARS",
    "META_KEY",
    "CancelKeyedCalls",
    "DetachedCalls",
    "idempotency_extension",
    "idempotency_key_in_meta",
]

META_KEY: Final = "io.raybus/idempotency-key"
EXTENSION: Final = "io.raybus/idempotency"
MAX_KEY_CHARS: Final = 200

T = TypeVar("T")
Ctx = ServerRequestContext[Any, Any]


def idempotency_key_in_meta(params: dict[str, Any]) -> str | None:
    """The call's idempotency key, or None when it has none.

    Raises:
        ValueError: ``invalid io.raybus/idempotency-key: <reason>``.
    """
    meta = params.get("_meta")
    if not isinstance(meta, dict) or META_KEY not in meta:
        return None
    key = meta[META_KEY]
    if not isinstance(key, str):
        raise ValueError(f"invalid {META_KEY}: must be a string")
    if not 1 <= len(key) <= MAX_KEY_CHARS:
        raise ValueError(f"invalid {META_KEY}: must be 1 to {MAX_KEY_CHARS} characters")
    # One pass over at most 200 characters: printable ASCII is 0x20..0x7e.
    if not all(" " <= char <= "~" for char in key):
        raise ValueError(f"invalid {META_KEY}: must be printable ASCII")
    return key


def idempotency_extension(ttl_s: float) -> dict[str, dict[str, Any]]:
    """What the gateway declares: how long the bus remembers a key (the edge resends
    within it)."""
    return {EXTENSION: {"ttlS": int(ttl_s)}}


class DetachedCalls:
    """Keyed calls that run on after their caller left; see the module docstring.

    Each runs as its own task; an explicit cancellation finds it by the handle its
    caller gave (:meth:`cancel`, from :meth:`middleware` on ``notifications/cancelled``),
    even when it arrives after the SDK already cancelled the caller's handler.
    """

    def __init__(self) -> None:
        self._running: dict[asyncio.Future[Any], Hashable | None] = {}
        self._by_handle: dict[Hashable, asyncio.Future[Any]] = {}

    def __len__(self) -> int:
        return len(self._running)

    async def run(
        self,
        call: Callable[[MessageHandler], Coroutine[Any, Any, T]],
        relay: MessageHandler,
        handle: Hashable | None = None,
    ) -> T:
        """``call(relayed)``'s result; if the caller is cancelled the call runs on, until
        it ends or :meth:`cancel` names ``handle``.

        Once the caller has left, what the call's server says about it goes nowhere:
        notifications are dropped, requests (sampling, elicitation) are refused.
        """
        present = True

        async def relayed(message: Notification | Request) -> dict[str, Any] | None:
            if present:
                return await relay(message)
            if isinstance(message, Request):
                text = "the caller of this keyed call has left"
                raise CallError(message.method, BusErrorCode.CANCELLED, text)
            return None

        running = asyncio.ensure_future(call(relayed))
        self._running[running] = handle
        if handle is not None:
            self._by_handle[handle] = running
        running.add_done_callback(self._ended)
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            present = False
            raise

    def cancel(self, handle: Hashable) -> bool:
        """Cancel the keyed call started with ``handle``; whether one was running."""
        running = self._by_handle.get(handle)
        if running is None:
            return False
        running.cancel()
        return True

    def _ended(self, running: asyncio.Future[Any]) -> None:
        handle = self._running.pop(running, None)
        if handle is not None and self._by_handle.get(handle) is running:
            del self._by_handle[handle]
        if not running.cancelled():
            running.exception()  # its caller may be gone: retrieved, so never logged

    def middleware(self, handle_of: Callable[[Ctx, Any], Hashable]) -> CancelKeyedCalls:
        """An SDK server middleware applying ``notifications/cancelled`` to keyed calls;
        ``handle_of(ctx, request_id)`` names a call as :meth:`run`'s caller did."""
        return CancelKeyedCalls(self, handle_of)


class CancelKeyedCalls:
    """SDK server middleware: a peer's ``notifications/cancelled`` reaches a keyed call."""

    def __init__(self, calls: DetachedCalls, handle_of: Callable[[Ctx, Any], Hashable]) -> None:
        self._calls = calls
        self._handle_of = handle_of

    async def __call__(self, ctx: Ctx, call_next: CallNext) -> HandlerResult:
        if ctx.request_id is None and ctx.method == "notifications/cancelled":
            params = ctx.params if isinstance(ctx.params, Mapping) else {}
            request_id = params.get("requestId")
            if isinstance(request_id, str | int) and not isinstance(request_id, bool):
                self._calls.cancel(self._handle_of(ctx, request_id))
        return await call_next(ctx)
