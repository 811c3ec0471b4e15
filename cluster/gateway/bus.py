"""What the gateway needs of the bus, and nothing more.

The gateway forwards MCP requests through a :class:`Bus` and builds its lists from the
bus's catalogs; ``cluster.client.BusClient`` is the real one, on any backend. Tests of
the gateway and its policy chain hand it a fake instead and start no Ray.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from actors.discovery.catalog import Catalog
from transports.message import Notification, Request

__all__ = ["Bus", "BusSession", "MessageHandler", "NotificationHandler"]

MessageHandler = Callable[[Notification | Request], Awaitable[dict[str, Any] | None]]
"""Receives what the server says about one call: notifications, and requests to answer."""

NotificationHandler = Callable[[Notification], Awaitable[None]]


class BusSession(Protocol):
    """One caller's session on the bus: its own id space, its own unsolicited messages."""

    notification_handler: NotificationHandler | None

    async def request(
        self,
        method: str,
        params: dict[str, Any],
        *,
        name: str | None,
        timeout_s: float = 60.0,
        on_message: MessageHandler | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        labels: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """The request's ``result``; ``traceparent`` / ``tracestate``: the W3C trace
        context the call carries (already checked by the gateway); ``labels``: what the
        caller asked in ``_meta["io.raybus/labels"]`` (checked, README "Regions");
        ``idempotency_key``: its ``_meta["io.raybus/idempotency-key"]`` (checked).

        Raises:
            CallError: it ended with a JSON-RPC error (from the server or the bus).
            BusTimeout: no outcome within ``timeout_s``.
            ConnectionClosed: the bus is gone.
        """
        ...

    def forget(self) -> None:
        """Drop this session's state on the bus (its MCP connection went away)."""
        ...


class Bus(Protocol):
    """The bus as the gateway sees it."""

    async def catalogs(self) -> dict[str, Catalog]:
        """What each pool serves: tools, resources, templates, prompts."""
        ...

    async def list_changed_counters(
        self, seen: dict[str, int] | None = None, wait_s: float = 0.0
    ) -> dict[str, int]:
        """How many times each list (tool / prompt / resource) changed on the bus; with
        ``seen``, once they differ from it or ``wait_s`` passed (a long poll)."""
        ...

    def new_session(self, *, principal: str) -> BusSession:
        """A session whose calls carry ``principal`` (never the client's credentials)."""
        ...
