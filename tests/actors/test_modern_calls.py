"""2026-07-28 calls served straight into an in-process SDK server (no session streams).

Each behaviour is checked against a real SDK server; where the SDK's own answer is the
reference, the same requests also run through ``Server.run`` over the SDK's in-memory
streams (the path these calls took before) and the two answers must be identical.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp.shared.memory import create_client_server_memory_streams
from mcp.shared.message import SessionMessage
from mcp_types import jsonrpc_message_adapter

from actors.worker.core import WorkerCore, WorkerIdentity
from actors.worker.hosted_server import HostedServer
from actors.worker.sdk_link import SdkServerLink, load_server_object
from tests.actors.fakes import RecordingWorkerPorts
from tests.actors.test_worker import WORKER, request_frame
from tests.waiting import wait_until
from transports.codec import message_from_json
from transports.message import JSONRPCId, Notification, Request, Response, TransportMessage

MODERN = "2026-07-28"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "tests", "version": "0"},
}
Received = tuple[TransportMessage, JSONRPCId | None]


def modern(request_id: int, method: str, params: dict[str, Any], **meta: Any) -> Request:
    return Request(
        id=request_id,
        method=method,
        params={**params, "_meta": {**ENVELOPE, **meta}},
    )


def modern_tool_call(request_id: int, tool: str, **arguments: Any) -> Request:
    return modern(request_id, "tools/call", {"name": tool, "arguments": arguments})


class LinkReader:
    """Reads everything a link emits, in order, with bounded waits."""

    def __init__(self, link: SdkServerLink) -> None:
        self.received: list[Received] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(link))

    async def _read(self, link: SdkServerLink) -> None:
        while True:
            self.received.append(await link.receive())
            self._changed.set()

    async def wait_for(
        self, predicate: Callable[[TransportMessage], bool], timeout_s: float = 10
    ) -> TransportMessage:
        async with asyncio.timeout(timeout_s):
            while True:
                for message, _ in self.received:
                    if predicate(message):
                        return message
                self._changed.clear()
                await self._changed.wait()

    async def answer(self, request_id: JSONRPCId, timeout_s: float = 10) -> Response:
        found = await self.wait_for(
            lambda m: isinstance(m, Response) and m.id == request_id, timeout_s
        )
        assert isinstance(found, Response)
        return found

    def about(self, request_id: JSONRPCId) -> list[Received]:
        """What the server sent about one request (related to it, or its answer)."""
        return [
            (m, related)
            for m, related in self.received
            if related == request_id or (isinstance(m, Response) and m.id == request_id)
        ]

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@asynccontextmanager
async def open_link(server: Any) -> AsyncIterator[tuple[SdkServerLink, LinkReader]]:
    link = SdkServerLink(server)
    async with asyncio.timeout(30):
        await link.open()
    reader = LinkReader(link)
    try:
        yield link, reader
    finally:
        await link.close()
        await reader.stop()


async def answers_over_sdk_streams(
    server: Server[Any], requests: list[Request]
) -> list[dict[str, Any]]:
    """The SDK's own answers: ``Server.run`` over its in-memory streams, one at a time."""
    answers: list[dict[str, Any]] = []
    async with create_client_server_memory_streams() as (client, server_streams):
        client_read, client_write = client
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.run, *server_streams, server.create_initialization_options())
            for request in requests:
                message = jsonrpc_message_adapter.validate_python(request.to_json_dict())
                await client_write.send(SessionMessage(message))
                with anyio.fail_after(10):
                    while True:
                        item = await client_read.receive()
                        assert isinstance(item, SessionMessage)
                        wire = item.message.model_dump(
                            mode="json", by_alias=True, exclude_unset=True
                        )
                        if "method" not in wire:
                            answers.append(message_from_json(wire).to_json_dict())
                            break
            tasks.cancel_scope.cancel()
    return answers


# -- a low-level server whose handlers fail in each way the SDK maps -------------------


class Boom(Exception):
    pass


async def _raise_mcp_error(ctx: ServerRequestContext[Any], params: types.RequestParams) -> Any:
    raise MCPError(code=-32042, message="custom refusal", data={"why": "because"})


async def _raise_plain(ctx: ServerRequestContext[Any], params: types.RequestParams) -> Any:
    raise Boom("internal detail that must not reach the wire")


async def _return_custom(ctx: ServerRequestContext[Any], params: types.RequestParams) -> Any:
    return {"answer": 42, "tuple": (1, 2)}


def failing_server() -> Server[Any]:
    server: Server[Any] = Server("failing")
    server.add_request_handler("test/mcp_error", types.RequestParams, _raise_mcp_error)
    server.add_request_handler("test/plain_error", types.RequestParams, _raise_plain)
    server.add_request_handler("test/custom", types.RequestParams, _return_custom)
    return server


# A call that, once it runs, reports progress to its client (two notifications).
PROGRESSING_CALL = request_frame(
    "a",
    1,
    "tools/call",
    {
        "name": "count_with_progress",
        "arguments": {"steps": 2},
        "_meta": {**ENVELOPE, "progressToken": "mine"},
    },
)


async def started_testkit_worker() -> tuple[WorkerCore, RecordingWorkerPorts]:
    """A started worker core hosting the testkit server on both eras (drain it after)."""
    ports = RecordingWorkerPorts()
    server = load_server_object("cluster.examples.testkit:server")
    hosted = HostedServer(
        lambda: SdkServerLink(server),
        modern_link_factory=lambda: SdkServerLink(server),
        sink=ports.reply,
        address=WORKER,
    )
    worker = WorkerCore(WorkerIdentity("s1", "pool", WORKER, capacity=8), hosted, ports)
    async with asyncio.timeout(30):
        await worker.start()
    return worker, ports


# -- tests -----------------------------------------------------------------------------


async def test_a_modern_calls_progress_and_logs_come_before_its_answer_related_to_it() -> None:
    server = load_server_object("cluster.examples.testkit:server")
    async with open_link(server) as (link, reader):
        progress = modern(
            5,
            "tools/call",
            {"name": "count_with_progress", "arguments": {"steps": 3}},
            progressToken=5,
        )
        logs = modern(
            6,
            "tools/call",
            {"name": "shout", "arguments": {"message": "hi"}},
            **{"io.modelcontextprotocol/logLevel": "info"},
        )
        await link.send(progress)
        await link.send(logs)
        await reader.answer(5)
        await reader.answer(6)

        about_5 = reader.about(5)
        methods = [m.method if isinstance(m, Notification) else "answer" for m, _ in about_5]
        assert methods == ["notifications/progress"] * 3 + ["answer"]
        assert all(related == 5 for m, related in about_5 if isinstance(m, Notification))
        assert [
            m.params["progress"]
            for m, _ in about_5
            if isinstance(m, Notification) and isinstance(m.params, dict)
        ] == [1, 2, 3]

        about_6 = reader.about(6)
        assert [type(m).__name__ for m, _ in about_6] == ["Notification", "Response"]
        log, related = about_6[0]
        assert isinstance(log, Notification)
        assert log.method == "notifications/message"
        assert related == 6


async def test_a_worker_passes_a_modern_calls_progress_to_its_client_before_the_answer() -> None:
    worker, ports = await started_testkit_worker()
    try:
        params = {
            "name": "count_with_progress",
            "arguments": {"steps": 2},
            "_meta": {**ENVELOPE, "progressToken": "mine"},
        }
        worker.deliver([request_frame("a", 1, "tools/call", params)])
        await ports.wait_for(Response)
        sent = [f.decode() for _, f in ports.sent]
        assert [type(m).__name__ for m in sent] == ["Notification", "Notification", "Response"]
        assert all(
            isinstance(n, Notification)
            and isinstance(n.params, dict)
            and n.params["progressToken"] == "mine"
            for n in sent[:2]
        )
        answer = sent[-1]
        assert isinstance(answer, Response)
        assert answer.id == 1
        assert answer.result["structuredContent"] == {"result": 2}
        assert answer.result["resultType"] == "complete"  # served on the 2026-07-28 era
    finally:
        await worker.drain(0, timeout_s=5)


async def test_modern_answers_and_errors_are_exactly_the_sdks_own() -> None:
    testkit = load_server_object("cluster.examples.testkit:server")
    assert not isinstance(testkit, Server)
    cases: list[tuple[Server[Any], list[Request]]] = [
        (
            testkit._lowlevel_server,
            [
                modern_tool_call(1, "echo", text="hi"),
                modern_tool_call(2, "fail", reason="tool failure"),  # an isError result
                modern_tool_call(3, "no_such_tool"),
                modern_tool_call(4, "ask", question="no back channel at 2026-07-28"),
                modern(5, "tools/call", {"arguments": {}}),  # no name: INVALID_PARAMS
                modern(6, "no/such/method", {}),  # METHOD_NOT_FOUND
                modern(7, "tools/list", {}),
                Request(  # an envelope without capabilities: the SDK's ladder refuses it
                    id=8,
                    method="tools/list",
                    params={"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}},
                ),
                modern(9, "tools/list", {}, **{"io.modelcontextprotocol/protocolVersion": "2099"}),
            ],
        ),
        (
            failing_server(),
            [
                modern(1, "test/mcp_error", {}),
                modern(2, "test/plain_error", {}),
                modern(3, "test/custom", {}),
            ],
        ),
    ]
    for server, requests in cases:
        reference = await answers_over_sdk_streams(server, requests)
        async with open_link(server) as (link, reader):
            for request in requests:
                await link.send(request)
            ours = [(await reader.answer(r.id)).to_json_dict() for r in requests]
        assert ours == reference
    errors = [a for a in reference if "error" in a]
    assert {e["error"]["code"] for e in errors} == {-32042, types.INTERNAL_ERROR}
    assert "internal detail" not in str(errors)


async def test_cancelling_a_modern_call_stops_it_and_it_is_never_answered(
    tmp_path: Path,
) -> None:
    worker, ports = await started_testkit_worker()
    try:
        marker = tmp_path / "cancelled"
        params = {
            "name": "nap",
            "arguments": {"seconds": 60, "marker": str(marker)},
            "_meta": ENVELOPE,
        }
        frame = request_frame("a", 1, "tools/call", params)
        worker.deliver([frame])
        await wait_until(lambda: worker.hosted.in_flight == 1)
        await worker.cancel([frame.envelope.correlation_key])
        await wait_until(marker.exists)
        await wait_until(lambda: worker.in_flight == 0)
        # The link keeps serving after a cancellation.
        echo = {"name": "echo", "arguments": {"text": "after"}, "_meta": ENVELOPE}
        worker.deliver([request_frame("a", 2, "tools/call", echo)])
        [reply] = await ports.wait_for(Response)
        answer = reply.decode()
        assert isinstance(answer, Response)
        assert answer.id == 2
        [cancelled, _] = ports.completions
        assert cancelled.abandoned
    finally:
        await worker.drain(0, timeout_s=5)


class GatedLink(SdkServerLink):
    """An SDK link whose opening waits for the test: the first modern call's window."""

    def __init__(self, server: Any, gate: asyncio.Event) -> None:
        super().__init__(server)
        self.opening = asyncio.Event()
        self._gate = gate

    async def open(self) -> None:
        self.opening.set()
        await self._gate.wait()
        await super().open()


async def test_a_call_cancelled_while_its_modern_link_opens_is_never_sent() -> None:
    # Under load the first modern call on a worker waits for its link to open; a cancel
    # that arrived then found no call and the tool ran to its end (a 2-worker test run).
    server = load_server_object("cluster.examples.testkit:server")
    gate = asyncio.Event()
    links: list[GatedLink] = []

    def gated() -> GatedLink:
        links.append(GatedLink(server, gate))
        return links[-1]

    ports = RecordingWorkerPorts()
    hosted = HostedServer(
        lambda: SdkServerLink(server), modern_link_factory=gated, sink=ports.reply, address=WORKER
    )
    async with asyncio.timeout(30):
        await hosted.start()
    try:
        frame = PROGRESSING_CALL  # had it run, its progress would be in ports.sent
        calling = asyncio.ensure_future(hosted.call(frame, timeout_s=30))
        await wait_until(lambda: bool(links) and links[0].opening.is_set())
        assert await hosted.cancel(frame.envelope.correlation_key)
        gate.set()
        async with asyncio.timeout(30):
            assert await calling is None  # cancelled, not answered
        # The link opened meanwhile serves the next call; the cancelled one never ran.
        echo = {"name": "echo", "arguments": {"text": "after"}, "_meta": ENVELOPE}
        async with asyncio.timeout(30):
            after = await hosted.call(request_frame("a", 2, "tools/call", echo), timeout_s=30)
        assert isinstance(after, Response)
        assert after.result["structuredContent"] == {"result": "after"}
        assert hosted.in_flight == 0
        assert ports.sent == []
    finally:
        await hosted.close()


async def test_a_started_call_cancelled_before_its_task_ran_never_reaches_the_server() -> None:
    worker, ports = await started_testkit_worker()
    try:
        frame = PROGRESSING_CALL
        worker.deliver([frame])  # started: its task exists but has not run yet
        await worker.cancel([frame.envelope.correlation_key])
        await wait_until(lambda: worker.in_flight == 0)
        [cancelled] = ports.completions
        assert cancelled.abandoned
        assert ports.sent == []  # no progress, no answer: the server never had it
    finally:
        await worker.drain(0, timeout_s=5)


async def test_a_handshake_session_and_modern_calls_interleave_on_one_link(
    tmp_path: Path,
) -> None:
    server = load_server_object("cluster.examples.testkit:server")
    async with open_link(server) as (link, reader):
        await link.send(
            Request(
                id=1,
                method="initialize",
                params={
                    "protocolVersion": "2025-11-25",
                    "capabilities": {"sampling": {}},
                    "clientInfo": {"name": "tests", "version": "0"},
                },
            )
        )
        init = await reader.answer(1)
        assert init.result["protocolVersion"] == "2025-11-25"
        await link.send(Notification(method="notifications/initialized"))

        # A legacy call waits on the client (sampling) while modern calls come and go.
        await link.send(
            Request(
                id=2, method="tools/call", params={"name": "ask", "arguments": {"question": "?"}}
            )
        )
        sampling = await reader.wait_for(
            lambda m: isinstance(m, Request) and m.method == "sampling/createMessage"
        )
        assert isinstance(sampling, Request)
        assert reader.about(2)[0][0] == sampling  # related to the legacy call
        for request_id in (10, 11, 12):
            await link.send(modern_tool_call(request_id, "echo", text=f"m{request_id}"))
        modern_marker = tmp_path / "modern-cancelled"
        await link.send(modern_tool_call(13, "nap", seconds=60, marker=str(modern_marker)))
        legacy_marker = tmp_path / "legacy-cancelled"
        await link.send(
            Request(
                id=3,
                method="tools/call",
                params={"name": "nap", "arguments": {"seconds": 60, "marker": str(legacy_marker)}},
            )
        )
        for request_id in (10, 11, 12):
            answer = await reader.answer(request_id)
            assert answer.result["structuredContent"] == {"result": f"m{request_id}"}
            assert answer.result["resultType"] == "complete"

        # Each cancellation reaches the call it names, whichever path runs it.
        for request_id, marker in ((13, modern_marker), (3, legacy_marker)):
            await link.send(
                Notification(method="notifications/cancelled", params={"requestId": request_id})
            )
            await wait_until(marker.exists)

        await link.send(
            Response.success(
                sampling.id,
                {"role": "assistant", "content": {"type": "text", "text": "4"}, "model": "m"},
            )
        )
        legacy = await reader.answer(2)
        assert legacy.result["content"][0]["text"] == "4"
        assert "resultType" not in legacy.result  # served on the handshake era
        assert not [m for m, _ in reader.received if isinstance(m, Response) and m.id in (3, 13)]


async def test_the_servers_lifespan_is_entered_once_per_link_and_seen_by_both_eras() -> None:
    entries: list[str] = []

    @asynccontextmanager
    async def lifespan(server: Server[dict[str, str]]) -> AsyncIterator[dict[str, str]]:
        entries.append("enter")
        yield {"state": f"lifespan {len(entries)}"}
        entries.append("exit")

    async def state(
        ctx: ServerRequestContext[dict[str, str]], params: types.RequestParams
    ) -> dict[str, str]:
        return ctx.lifespan_context

    server: Server[dict[str, str]] = Server("stateful", lifespan=lifespan)
    server.add_request_handler("test/state", types.RequestParams, state)
    async with open_link(server) as (link, reader):
        init_params = {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "tests", "version": "0"},
        }
        await link.send(Request(id=1, method="initialize", params=init_params))
        await reader.answer(1)
        await link.send(Notification(method="notifications/initialized"))
        await link.send(Request(id=2, method="test/state", params={}))
        await link.send(modern(3, "test/state", {}))
        await link.send(modern(4, "test/state", {}))
        for request_id in (2, 3, 4):
            assert (await reader.answer(request_id)).result["state"] == "lifespan 1"
        assert entries == ["enter"]
    assert entries == ["enter", "exit"]


async def hosted_both_eras(server: MCPServer, changed: list[str]) -> HostedServer:
    """``server`` hosted as a worker hosts it (a handshake link and a 2026-07-28 one),
    started; each list change it hears is appended to ``changed``."""
    ports = RecordingWorkerPorts()
    hosted = HostedServer(
        lambda: SdkServerLink(server),
        modern_link_factory=lambda: SdkServerLink(server),
        sink=ports.reply,
        address=WORKER,
        on_list_changed=changed.append,
    )
    await asyncio.wait_for(hosted.start(), 30)
    return hosted


async def test_list_changes_reach_the_worker_over_its_modern_listen_stream() -> None:
    server = MCPServer("changing")

    @server.tool()
    async def change(ctx: Context) -> str:
        """Announce that the tool list changed."""
        await ctx.notify_tools_changed()
        return "changed"

    changed: list[str] = []
    hosted = await hosted_both_eras(server, changed)
    try:
        params = {"name": "change", "arguments": {}, "_meta": ENVELOPE}
        # The listen stream opens with the first 2026-07-28 call; a change announced
        # before it subscribed reaches nobody, so announce until one is heard (bounded).
        request_id = 0
        async with asyncio.timeout(60):
            while not changed:
                request_id += 1
                frame = request_frame("a", request_id, "tools/call", params)
                answer = await hosted.call(frame, timeout_s=10)
                assert answer is not None
                assert answer.result["structuredContent"] == {"result": "changed"}
        assert changed[0] == "tool"
    finally:
        await hosted.close()


async def test_a_list_change_announced_the_handshake_way_reaches_the_worker_too() -> None:
    # A server written for sessions announces on the session of the call that changed
    # the list; on a 2026-07-28 call that is the connection channel, where the SDK drops
    # it for wire clients. The worker is no wire client: it re-reads its lists.
    server = MCPServer("changing the old way")

    @server.tool()
    async def change(ctx: Context) -> str:
        """Announce that the tool list changed, on the calling session."""
        await ctx.session.send_tool_list_changed()
        return "changed"

    changed: list[str] = []
    hosted = await hosted_both_eras(server, changed)
    try:
        params = {"name": "change", "arguments": {}, "_meta": ENVELOPE}
        answer = await hosted.call(request_frame("a", 1, "tools/call", params), timeout_s=10)
        assert answer is not None
        assert answer.result["structuredContent"] == {"result": "changed"}
        await wait_until(lambda: changed == ["tool"])
    finally:
        await hosted.close()


async def test_closing_a_link_answers_its_running_modern_calls() -> None:
    server = load_server_object("cluster.examples.testkit:server")
    link = SdkServerLink(server)
    await asyncio.wait_for(link.open(), 30)
    reader = LinkReader(link)
    try:
        await link.send(modern_tool_call(1, "nap", seconds=60))
        await link.send(modern_tool_call(2, "echo", text="sync"))
        await reader.answer(2)
        await link.close()
        answer = await reader.answer(1)
        assert answer.error is not None
        assert answer.error.code == types.CONNECTION_CLOSED
    finally:
        await reader.stop()
