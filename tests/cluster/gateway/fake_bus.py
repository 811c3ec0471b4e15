"""A bus for gateway tests that starts no Ray: catalogs in memory, tools as functions.

It implements the gateway's ``Bus`` protocol (``cluster.gateway.bus``) the way the real
client does what the gateway relies on: a session per MCP connection carrying the
principal, results as JSON objects, errors as ``CallError``, server messages about a
call handed to the call's ``on_message``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from actors.discovery.catalog import Catalog
from cluster.gateway.bus import MessageHandler, NotificationHandler
from transports.errors import INVALID_PARAMS, BusErrorCode, CallError
from transports.message import Notification

Tool = Callable[[dict[str, Any], MessageHandler | None], Awaitable[dict[str, Any]]]


@dataclass
class Call:
    principal: str
    method: str
    name: str | None
    params: dict[str, Any]
    traceparent: str | None = None
    tracestate: str | None = None
    labels: dict[str, str] | None = None
    idempotency_key: str | None = None


@dataclass
class FakeBus:
    catalog: Catalog
    tools: dict[str, Tool]
    calls: list[Call] = field(default_factory=list)
    sessions: list[FakeSession] = field(default_factory=list)
    changes: dict[str, int] = field(default_factory=dict)

    async def catalogs(self) -> dict[str, Catalog]:
        return {"fake": self.catalog}

    async def list_changed_counters(
        self, seen: dict[str, int] | None = None, wait_s: float = 0.0
    ) -> dict[str, int]:
        return dict(self.changes)  # at once: the tests drive the watcher's rounds

    def new_session(self, *, principal: str) -> FakeSession:
        session = FakeSession(self, principal)
        self.sessions.append(session)
        return session


@dataclass
class FakeSession:
    bus: FakeBus
    principal: str
    notification_handler: NotificationHandler | None = None
    forgotten: bool = False

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
        call = Call(
            self.principal, method, name, params, traceparent, tracestate, labels, idempotency_key
        )
        self.bus.calls.append(call)
        tool = self.bus.tools.get(name or "") if method == "tools/call" else None
        if tool is None:
            raise CallError(method, INVALID_PARAMS, f"Unknown tool: {name}")
        return await tool(params, on_message)

    def forget(self) -> None:
        self.forgotten = True


def text_result(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": False}


async def overloaded(params: dict[str, Any], on_message: MessageHandler | None) -> dict[str, Any]:
    raise CallError("tools/call", BusErrorCode.OVERLOADED, "queue full", {"retryAfterSeconds": 1})


async def echo(params: dict[str, Any], on_message: MessageHandler | None) -> dict[str, Any]:
    return text_result(str(params.get("arguments", {}).get("text", "")))


async def count(params: dict[str, Any], on_message: MessageHandler | None) -> dict[str, Any]:
    """Reports progress 1..steps through the call's message handler, as a worker would."""
    steps = int(params.get("arguments", {}).get("steps", 1))
    token = params.get("_meta", {}).get("progressToken")
    for step in range(1, steps + 1):
        if on_message is not None and token is not None:
            params = {"progressToken": token, "progress": step, "total": steps}
            await on_message(Notification(method="notifications/progress", params=params))
    return text_result(f"counted {steps}")


def fake_bus() -> FakeBus:
    schema = {"type": "object", "properties": {"text": {"type": "string"}}}
    catalog = Catalog.of(
        tools=[
            {"name": "echo", "description": "says it back", "inputSchema": schema},
            {"name": "count", "inputSchema": {"type": "object"}},
            {"name": "overloaded", "inputSchema": {"type": "object"}},
        ],
        prompts=[{"name": "greet"}],
    )
    return FakeBus(catalog, {"echo": echo, "count": count, "overloaded": overloaded})
