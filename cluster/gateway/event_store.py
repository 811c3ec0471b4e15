"""A bounded in-memory SSE event store: Streamable HTTP resumability for the gateway.

SEP-1699: every SSE event gets an id, and a client whose stream closed mid-call
reconnects with ``Last-Event-ID`` and gets the events it missed. The gateway owns the
client-facing streams, so the store lives with it (and with any server the SDK serves
over HTTP directly, such as the conformance fixture's standalone mode).

Two bounds keep its memory in check:

* a count: at most ``max_events`` events over all streams, oldest dropped first;
* a finished stream (its JSON-RPC response or error was stored: the transport closes a
  request's stream after it) keeps its events for ``finished_kept_s`` only, which covers
  a client reconnecting after its stream broke (the gateway tells clients to retry within
  half a second). Without this, every client that reset after an ``initialize`` left its
  answer behind until 10,000 newer events pushed it out: measured at +72 MiB on a gateway
  that had seen 10,000 abrupt disconnects.

A stream still open (a long call's progress, the standalone GET stream) is bounded by the
count only, so a client resuming after a long quiet spell still finds its last event.

Sessions never see each other's events. The SDK names a request's stream by the request's
id and the standalone stream ``_GET_stream``, in every session alike, and hands one store
to every session's transport: a store keyed by stream id alone would replay session B's
answers to a client of session A that resumes stream "1" (or that simply sends another
session's event id). :func:`scope_events_per_session` gives each session's transport its
own view (:class:`SessionEvents`) of one shared, bounded store; a view finds only the
events stored through it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types import JSONRPCError, JSONRPCMessage, JSONRPCResponse

__all__ = ["BoundedEventStore", "SessionEvents", "scope_events_per_session"]

logger = logging.getLogger(__name__)

# A stream as the store keys it: (session scope, the SDK's stream id).
_Key = tuple[str, StreamId]


class BoundedEventStore(EventStore):
    """Keeps recent SSE events per stream (see the module docstring for the bounds).

    Event ids are decimal counters, so "after id N" is a numeric comparison; a client
    that resumes from an id already dropped gets nothing replayed (``None``), which the
    transport answers as an unknown event id.
    """

    def __init__(
        self,
        max_events: int = 10_000,
        finished_kept_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_events = max_events
        self.finished_kept_s = finished_kept_s
        self._clock = clock
        self._counter = itertools.count(1)
        self._stream_of: dict[int, _Key] = {}  # every event held, by id
        self._streams: dict[_Key, dict[int, JSONRPCMessage | None]] = {}
        self._order: deque[int] = deque()  # event ids, oldest first (may hold dropped ids)
        self._finished: deque[tuple[float, _Key]] = deque()  # oldest finish first
        self._timer: asyncio.TimerHandle | None = None

    @property
    def held(self) -> int:
        """How many events the store holds. (No ``__len__``: the SDK tests a store's
        truth to decide whether streams are resumable, and an empty one must be.)"""
        return len(self._stream_of)

    def for_session(self, session_id: str) -> SessionEvents:
        """A view of this store that holds and finds one session's events only."""
        return SessionEvents(self, session_id)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        """Record one event (``None`` is a priming event) and return its id (unscoped:
        for a server with a single client, such as the conformance fixture)."""
        return self.store_scoped("", stream_id, message)

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        return await self.replay_scoped("", last_event_id, send_callback)

    def store_scoped(self, scope: str, stream_id: StreamId, message: JSONRPCMessage | None) -> str:
        event_id = next(self._counter)
        key = (scope, stream_id)
        self._stream_of[event_id] = key
        self._streams.setdefault(key, {})[event_id] = message
        self._order.append(event_id)
        if isinstance(message, JSONRPCResponse | JSONRPCError):
            self._finished.append((self._clock(), key))
            self._schedule_prune()
        self.prune()
        return str(event_id)

    async def replay_scoped(
        self, scope: str, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        """Send the events of ``last_event_id``'s stream that came after it, if that
        event was stored in ``scope``; otherwise nothing (an unknown event id)."""
        self.prune()
        try:
            after = int(last_event_id)
        except ValueError:
            return None
        key = self._stream_of.get(after)
        if key is None or key[0] != scope:
            return None
        for event_id, message in list(self._streams.get(key, {}).items()):
            # Priming events (no message) only exist to hand the client an id to resume from.
            if event_id > after and message is not None:
                await send_callback(EventMessage(message, str(event_id)))
        return key[1]

    def prune(self) -> None:
        """Drop finished streams past their keeping time, then the oldest events over
        the count."""
        cutoff = self._clock() - self.finished_kept_s
        while self._finished and self._finished[0][0] <= cutoff:
            self._drop_stream(self._finished.popleft()[1])
        while len(self._stream_of) > self.max_events:
            event_id = self._order.popleft()
            stream = self._stream_of.pop(event_id, None)
            if stream is not None:
                events = self._streams[stream]
                del events[event_id]
                if not events:
                    del self._streams[stream]
        if len(self._order) > 2 * len(self._stream_of) + 1024:
            # Ids of dropped streams linger in the order; rebuild it now and then
            # (amortised O(1) per event) so it stays proportional to what is held.
            self._order = deque(i for i in self._order if i in self._stream_of)

    def _drop_stream(self, stream: _Key) -> None:
        for event_id in self._streams.pop(stream, {}):
            self._stream_of.pop(event_id, None)

    def _schedule_prune(self) -> None:
        # Memory must come back when traffic stops too, not only on the next event.
        if self._timer is None:
            delay = self._finished[0][0] + self.finished_kept_s - self._clock()
            self._timer = asyncio.get_running_loop().call_later(max(delay, 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.prune()
        if self._finished:
            self._schedule_prune()


class SessionEvents(EventStore):
    """One session's view of a :class:`BoundedEventStore`."""

    def __init__(self, store: BoundedEventStore, session_id: str) -> None:
        self._store = store
        self._scope = session_id

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        return self._store.store_scoped(self._scope, stream_id, message)

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        return await self._store.replay_scoped(self._scope, last_event_id, send_callback)


def scope_events_per_session(manager: StreamableHTTPSessionManager) -> None:
    """Give each session's transport its own view of ``manager``'s event store.

    The SDK (2.x) makes a session's transport in ``_admit_session`` and hands it the
    manager's one store. Should a later SDK make transports elsewhere, resumability is
    switched off rather than shared across sessions (fail closed).
    """
    store = manager.event_store
    if not isinstance(store, BoundedEventStore):
        return
    admit = getattr(manager, "_admit_session", None)
    if admit is None:
        logger.warning("this mcp SDK admits sessions unknown ways: SSE resumption is off")
        manager.event_store = None
        return

    def admit_scoped(*args: Any, **kwargs: Any) -> Any:
        transport = admit(*args, **kwargs)
        if transport is not None:
            if transport.mcp_session_id is None or not hasattr(transport, "_event_store"):
                raise RuntimeError("cannot scope SSE events to this session: refusing it")
            transport._event_store = store.for_session(transport.mcp_session_id)
        return transport

    manager._admit_session = admit_scoped  # type: ignore[method-assign]
