"""Pushed task status notifications over real HTTP, both eras, two principals.

2025-11-25: ``notifications/tasks/status`` reaches the session that created the task (the
official SDK client's standalone GET stream), and no other session. 2026-07-28:
``notifications/tasks`` on a ``subscriptions/listen`` stream naming task ids (raw SSE).
The bus is the fake one; the store is the real store core in memory, with its change
feed (:class:`FeedTaskStore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2 as httpx
import mcp_types as types
import pytest
from mcp.shared.subscriptions import ToolsListChanged

from actors.tasks.feed import FeedBatch, FeedCursor
from actors.tasks.journal import MemoryJournal
from actors.tasks.model import RELATED_TASK_META
from actors.tasks.spec import TaskSettings
from actors.tasks.store import TaskStoreCore
from cluster.gateway.policy.chain import PolicyConfig
from cluster.gateway.policy.tokens import hash_token
from cluster.gateway.server import Gateway
from cluster.gateway.tasks import GatewayTasks
from cluster.gateway.tasks_modern import TASKS_EXTENSION
from cluster.tasks.settings import PoolTasksConfig
from tests.actors.test_task_store import progress
from tests.cluster.gateway.fake_bus import fake_bus, text_result
from tests.cluster.gateway.fake_tasks import FakeTaskStore
from tests.cluster.gateway.serving import serving
from tests.waiting import wait_until

ALICE, BOB = "alice-notify-token-0123456789", "bob-notify-token-9876543210"
TOKENS = {
    "tokens": [
        {"principal": "alice", "sha256": hash_token(ALICE)},
        {"principal": "bob", "sha256": hash_token(BOB)},
    ]
}
VERSION = "2026-07-28"
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
# Bounds a hang on a cold, loaded 2-core machine; they measure nothing.
_STREAM_S = 60.0


class FeedTaskStore(FakeTaskStore):
    """The fake store with the change feed the Ray store offers, and a restart: while
    the store is away a read waits, and a read in flight is asked again of the new
    incarnation (as ``ask_store`` does with a store Ray restarts)."""

    def __init__(self) -> None:
        super().__init__()
        self.journal = MemoryJournal()
        self.core = TaskStoreCore(self.ports, self.journal, TaskSettings(), clock=time.time)
        self._reachable = asyncio.Event()
        self._reachable.set()
        self._gone = asyncio.Event()

    async def changes(self, cursor: FeedCursor | None, timeout_s: float) -> FeedBatch:
        while True:
            await self._reachable.wait()
            poll = asyncio.ensure_future(self.core.feed.changes(cursor, timeout_s))
            gone = asyncio.ensure_future(self._gone.wait())
            await asyncio.wait({poll, gone}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if poll.done():
                return poll.result()
            poll.cancel()

    def go_away(self) -> None:
        """The store's process died: nothing answers until :meth:`restart`."""
        self._reachable.clear()
        self._gone.set()
        self._gone = asyncio.Event()

    async def restart(self) -> None:
        """A new incarnation, from the journal."""
        self.core = TaskStoreCore(self.ports, self.journal, TaskSettings(), clock=time.time)
        await self.core.load()
        self._reachable.set()


Served = tuple[str, FeedTaskStore, Gateway]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    store = FeedTaskStore()
    pool = PoolTasksConfig.model_validate({"tools": {"echo": "optional"}})
    tasks = GatewayTasks(store, {"fake": pool}, authenticated=True, configured=True)
    gateway = Gateway(fake_bus(), tasks=tasks, policy=PolicyConfig.model_validate(TOKENS))
    async with serving(gateway, TOKENS) as url:
        yield url, store, gateway
    await gateway.aclose()


class LegacySession:
    """A 2025-11-25 session over raw HTTP: requests by POST, the standalone GET stream's
    messages in :attr:`heard` (the SDK 2.3 client drops ``notifications/tasks/status``:
    its core tables have no task flow)."""

    def __init__(self, http: httpx.AsyncClient, url: str, token: str) -> None:
        self._http, self._url = http, url
        self._headers = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            "authorization": f"Bearer {token}",
        }
        self.heard: list[dict[str, Any]] = []
        self._ids = 0

    async def open(self) -> None:
        init = {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "notify-test", "version": "1"},
        }
        await self.request("initialize", init)
        self._headers["mcp-protocol-version"] = "2025-11-25"
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        await self._http.post(self._url, json=initialized, headers=self._headers)

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._ids += 1
        body = {"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params}
        response = await self._http.post(self._url, json=body, headers=self._headers)
        if "mcp-session-id" in response.headers:
            self._headers["mcp-session-id"] = response.headers["mcp-session-id"]
        lines = response.text.splitlines()
        messages = [
            json.loads(line[5:]) for line in lines if line.startswith("data:") and line[5:].strip()
        ]
        if not messages:
            messages = [response.json()]
        [answer] = [m for m in messages if m.get("id") == self._ids]
        assert isinstance(answer, dict)
        return answer

    async def create_task(
        self, text: str, name: str = "echo", meta: dict[str, Any] | None = None, **arguments: Any
    ) -> str:
        arguments = arguments or {"text": text}
        params: dict[str, Any] = {"name": name, "arguments": arguments, "task": {}}
        if meta is not None:
            params["_meta"] = meta
        answer = await self.request("tools/call", params)
        return str(answer["result"]["task"]["taskId"])

    async def hear(self, started: asyncio.Event) -> None:
        """Read the standalone GET stream into :attr:`heard` until cancelled."""
        headers = {**self._headers, "accept": "text/event-stream"}
        async with self._http.stream("GET", self._url, headers=headers) as response:
            assert response.status_code == 200
            started.set()
            async for message in frames(response):
                self.heard.append(message)


@asynccontextmanager
async def legacy_session(url: str, token: str) -> AsyncIterator[LegacySession]:
    async with httpx.AsyncClient(timeout=_STREAM_S) as http:
        session = LegacySession(http, url, token)
        await session.open()
        started = asyncio.Event()
        hearing = asyncio.create_task(session.hear(started))
        try:
            async with asyncio.timeout(_STREAM_S):
                await started.wait()
            yield session
        finally:
            hearing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await hearing


async def test_a_2025_task_status_change_reaches_only_the_session_that_created_it(
    served: Served,
) -> None:
    url, store, _ = served
    async with (
        legacy_session(url, ALICE) as alice,
        legacy_session(url, ALICE) as alice_elsewhere,
        legacy_session(url, BOB) as bob,
    ):
        alices = await alice.create_task("a")
        bobs = await bob.create_task("b")
        await store.answer(alices, result={**text_result("full"), "isError": True})
        await wait_until(lambda: bool(alice.heard), _STREAM_S)
        await store.answer(bobs, result=text_result("b"))
        await wait_until(lambda: bool(bob.heard), _STREAM_S)
        # Changes are pushed in order: bob's arrived, so alice's was handled before it.
        mine = await alice_elsewhere.create_task("c")
        await store.core.cancel(mine, "alice")
        await wait_until(lambda: bool(alice_elsewhere.heard), _STREAM_S)
    [told] = alice.heard
    assert told["method"] == "notifications/tasks/status"
    types.TaskStatusNotificationParams.model_validate(told["params"])  # the schema's shape
    assert told["params"]["taskId"] == alices
    assert told["params"]["status"] == "failed"  # a tool's isError result, on this era
    assert told["params"]["statusMessage"] == "full"
    assert {"createdAt", "lastUpdatedAt", "ttl", "pollInterval"} <= told["params"].keys()
    assert RELATED_TASK_META not in told["params"].get("_meta", {})
    assert [(m["params"]["taskId"], m["params"]["status"]) for m in bob.heard] == [
        (bobs, "completed")
    ]
    assert [(m["params"]["taskId"], m["params"]["status"]) for m in alice_elsewhere.heard] == [
        (mine, "cancelled")
    ]


def told_times(heard: Callable[[], list[dict[str, Any]]], times: int) -> bool:
    return len(heard()) == times


async def test_a_2025_task_reports_progress_to_its_creator_under_the_requests_token(
    served: Served,
) -> None:
    url, store, _ = served
    async with (
        legacy_session(url, ALICE) as alice,
        legacy_session(url, ALICE) as alice_elsewhere,
    ):
        task_id = await alice.create_task("a", meta={"progressToken": "tok-1"})
        call = store.ports.submitted[-1]

        def progress_heard() -> list[dict[str, Any]]:
            return [m["params"] for m in alice.heard if m["method"] == "notifications/progress"]

        for step in (1, 2):
            await store.core.on_frame(progress(call, step, 3))
            await wait_until(functools.partial(told_times, progress_heard, step), _STREAM_S)
        await store.core.on_frame(progress(call, 1, 3))  # a value that went back: not told
        await store.answer(task_id, result=text_result("a"))
        await wait_until(lambda: len(alice.heard) == 3, _STREAM_S)
    assert [(p["progressToken"], p["progress"], p["total"]) for p in progress_heard()] == [
        ("tok-1", 1, 3),
        ("tok-1", 2, 3),
    ]
    assert alice.heard[-1]["method"] == "notifications/tasks/status"
    assert alice.heard[-1]["params"]["status"] == "completed"
    assert alice_elsewhere.heard == []


def listen_body(task_ids: list[Any], *, declared: bool = True) -> dict[str, Any]:
    capabilities: dict[str, Any] = {"extensions": {TASKS_EXTENSION: {}}} if declared else {}
    return {
        "jsonrpc": "2.0",
        "id": "listen-1",
        "method": "subscriptions/listen",
        "params": {
            "notifications": {"toolsListChanged": True, "taskIds": task_ids},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": VERSION,
                "io.modelcontextprotocol/clientCapabilities": capabilities,
            },
        },
    }


def headers(token: str) -> dict[str, str]:
    return {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": VERSION,
        "mcp-method": "subscriptions/listen",
        "authorization": f"Bearer {token}",
    }


async def frames(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON-RPC messages of an SSE response, as they arrive."""
    async for line in response.aiter_lines():
        if line.startswith("data:") and line[5:].strip():
            yield json.loads(line[5:])


async def new_task(url: str, token: str, text: str, name: str = "echo", **arguments: Any) -> str:
    meta = {
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS_EXTENSION: {}}},
    }
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments or {"text": text}, "_meta": meta},
    }
    sent = {**headers(token), "mcp-method": "tools/call", "mcp-name": name}
    async with httpx.AsyncClient(timeout=30) as http:
        answer = (await http.post(url, json=body, headers=sent)).json()
    assert answer["result"]["resultType"] == "task", answer
    return str(answer["result"]["taskId"])


async def test_a_2026_listener_hears_its_own_tasks_status_changes_and_no_one_elses(
    served: Served,
) -> None:
    url, store, gateway = served
    alices = await new_task(url, ALICE, "a")
    bobs = await new_task(url, BOB, "b")
    seen: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(timeout=_STREAM_S) as http,
        http.stream(
            "POST", url, json=listen_body([alices, bobs, "no-such-task"]), headers=headers(ALICE)
        ) as response,
    ):
        assert response.status_code == 200
        stream = frames(response)
        ack = await anext(stream)
        assert ack["method"] == "notifications/subscriptions/acknowledged"
        assert ack["params"]["notifications"]["taskIds"] == [alices]  # only what alice sees
        assert ack["params"]["notifications"]["toolsListChanged"] is True
        seen.append(await anext(stream))  # the task as it is now
        await store.answer(bobs, result=text_result("b"))
        await store.ask(alices, "e1", "elicitation/create", {"message": "sure?"})
        seen.append(await anext(stream))
        await store.answer(alices, result=text_result("done"))
        seen.append(await anext(stream))
        await gateway.events.publish(ToolsListChanged())  # list changes share the stream
        changed = await anext(stream)
    assert changed["method"] == "notifications/tools/list_changed"
    assert changed["params"]["_meta"] == {SUBSCRIPTION_ID: "listen-1"}
    assert [m["method"] for m in seen] == ["notifications/tasks"] * 3
    assert {m["params"]["taskId"] for m in seen} == {alices}
    assert [m["params"]["status"] for m in seen] == ["working", "input_required", "completed"]
    asked = seen[1]["params"]["inputRequests"]
    assert [r["method"] for r in asked.values()] == ["elicitation/create"]
    assert seen[2]["params"]["result"]["content"] == [{"type": "text", "text": "done"}]
    for message in seen:
        assert message["params"]["_meta"] == {SUBSCRIPTION_ID: "listen-1"}
        assert "resultType" not in message["params"]


async def test_a_2026_listener_that_did_not_declare_the_extension_is_refused_with_32021(
    served: Served,
) -> None:
    url, _, _ = served
    async with httpx.AsyncClient(timeout=30) as http:
        refused = await http.post(
            url, json=listen_body(["t"], declared=False), headers=headers(ALICE)
        )
        bad = await http.post(url, json=listen_body([7]), headers=headers(ALICE))
    error = refused.json()["error"]
    assert error["code"] == -32021
    assert error["data"] == {"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}}
    assert bad.json()["error"]["code"] == -32602
    assert "taskIds" in bad.json()["error"]["message"]


async def test_notifications_survive_a_store_restart_and_tell_what_changed_meanwhile(
    served: Served,
) -> None:
    url, store, _ = served
    async with legacy_session(url, ALICE) as alice:
        legacy = await alice.create_task("2025")
        modern = await new_task(url, ALICE, "2026")
        seen: list[dict[str, Any]] = []
        async with (
            httpx.AsyncClient(timeout=_STREAM_S) as http,
            http.stream("POST", url, json=listen_body([modern]), headers=headers(ALICE)) as listen,
        ):
            stream = frames(listen)
            await anext(stream)  # the ack
            seen.append(await anext(stream))  # working
            store.go_away()
            # Journaled by the dying incarnation; no watcher could read it from there.
            await store.answer(modern, result=text_result("meanwhile"))
            await store.restart()
            seen.append(await anext(stream))
            await store.answer(legacy, result=text_result("after"))
            await wait_until(lambda: bool(alice.heard), _STREAM_S)
    assert [m["params"]["status"] for m in seen] == ["working", "completed"]
    assert seen[1]["params"]["result"]["content"] == [{"type": "text", "text": "meanwhile"}]
    # The 2025 task was working before and after the restart: told once, when it ended.
    assert [(m["params"]["taskId"], m["params"]["status"]) for m in alice.heard] == [
        (legacy, "completed")
    ]
