"""A bounded in-memory SSE event store: Streamable HTTP resumability for the gateway.

SEP-1699: every SSE event gets an id, and a client whose stream closed mid-call
reconnects with ``Last-Event-ID`` and gets the events it missed. The gateway owns the
client-facing streams, so the store lives with it (and with any server the SDK serves
over HTTP directly, such as the conformance fixture's standalone mode).
"""

from __future__ import annotations

import itertools
from collections import deque

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types import JSONRPCMessage

__all__ = ["BoundedEventStore"]


class BoundedEventStore(EventStore):
    """Keeps the last ``max_events`` SSE events of all streams, oldest dropped first.

    Event ids are decimal counters, so "after id N" is a numeric comparison; a client
    that resumes from an id already dropped gets nothing replayed (``None``), which the
    transport answers as an unknown event id.
    """

    def __init__(self, max_events: int = 10_000) -> None:
        self._events: deque[tuple[StreamId, int, JSONRPCMessage | None]] = deque(maxlen=max_events)
        self._counter = itertools.count(1)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        """Record one event (``None`` is a priming event) and return its id."""
        event_id = next(self._counter)
        self._events.append((stream_id, event_id, message))
        return str(event_id)

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        """Send the stored events of ``last_event_id``'s stream that came after it."""
        try:
            after = int(last_event_id)
        except ValueError:
            return None
        stream = next((s for s, i, _ in self._events if i == after), None)
        if stream is None:
            return None
        for stream_id, event_id, message in list(self._events):
            # Priming events (no message) only exist to hand the client an id to resume from.
            if stream_id == stream and event_id > after and message is not None:
                await send_callback(EventMessage(message, str(event_id)))
        return stream
