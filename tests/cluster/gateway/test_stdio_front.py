"""`raybus up --stdio`: every line gets the codec's checks, as HTTP bodies and /ws frames do.

The gateway (over a fake bus, no Ray) is served through the stdio front with the
process's stdin and stdout replaced by in-memory lines. A task's input request (2025-11-25
relay) goes out on stdout and its answer comes back on stdin.
"""

from __future__ import annotations

import json
from typing import Any, cast

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.tasks.model import RELATED_TASK_META
from cluster.gateway.server import Gateway
from cluster.gateway.stdio_front import checked_stdio_server
from cluster.gateway.tasks_input import RELAY_ID_PREFIX
from tests.cluster.gateway.fake_bus import fake_bus
from tests.cluster.gateway.fake_tasks import FakeTaskStore
from tests.cluster.gateway.test_tasks_gateway import gateway_with_tasks
from tests.cluster.gateway.test_tasks_input import ASKED
from tests.waiting import wait_until
from transports.codec import DecodeLimits


class _Stdout:
    """Stands in for stdout: each line the SDK writes, as parsed JSON, on a stream."""

    def __init__(self, lines: MemoryObjectSendStream[dict[str, Any]]) -> None:
        self._lines = lines

    async def write(self, text: str) -> None:
        for line in text.splitlines():
            await self._lines.send(json.loads(line))

    async def flush(self) -> None:
        pass


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "stdio", "version": "1"},
    },
}
CALL = b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":%s}}'


async def test_lines_failing_the_codec_are_answered_and_never_reach_the_bus() -> None:
    bus = fake_bus()
    gateway = Gateway(bus)
    to_stdin, stdin = anyio.create_memory_object_stream[bytes](16)
    stdout_lines, from_stdout = anyio.create_memory_object_stream[dict[str, Any]](16)
    stdout = cast(anyio.AsyncFile[str], _Stdout(stdout_lines))

    async def answer(line: bytes, answers: MemoryObjectReceiveStream[dict[str, Any]]) -> Any:
        await to_stdin.send(line + b"\n")
        return await answers.receive()

    async with (
        anyio.create_task_group() as group,
        checked_stdio_server(DecodeLimits(), gateway.audit, lines=stdin, stdout=stdout) as (
            read,
            write,
        ),
    ):
        options = gateway.server.create_initialization_options()
        group.start_soon(gateway.server.run, read, write, options)
        with anyio.fail_after(30):  # a line left unanswered would wait here for ever
            assert (await answer(json.dumps(INITIALIZE).encode(), from_stdout))["id"] == 1
            await to_stdin.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
            refused = [
                await answer(CALL % (2, b'{"text": "a", "text": "b"}'), from_stdout),
                await answer(CALL % (3, b'{"text": NaN}'), from_stdout),
                await answer(CALL % (4, b'{"text": 1e999}'), from_stdout),
                await answer(b"{nope", from_stdout),
                await answer(b"\xff", from_stdout),
                await answer(b'[{"jsonrpc":"2.0","id":5,"method":"ping"}]', from_stdout),
            ]
            echoed = await answer(CALL % (6, b'{"text": "ok"}'), from_stdout)
        await to_stdin.aclose()  # end of stdin ends the session
    assert [(r["id"], r["error"]["code"]) for r in refused] == [
        (None, -32700),
        (None, -32700),
        (None, -32700),
        (None, -32700),
        (None, -32700),
        (None, -32600),
    ]
    assert echoed["id"] == 6
    assert echoed["result"]["content"][0]["text"] == "ok"
    # Before: the SDK kept the last duplicate key and the bus served {"text": "b"}.
    assert [c.params["arguments"] for c in bus.calls] == [{"text": "ok"}]
    assert gateway.audit.close()
    outcomes = [r["outcome"] for r in gateway.audit.records]
    assert outcomes.count("error -32700") == 5
    assert outcomes.count("error -32600") == 1


async def test_a_tasks_input_request_and_its_answer_travel_stdin_and_stdout() -> None:
    store = FakeTaskStore()
    gateway = gateway_with_tasks(fake_bus(), store, {"echo": "optional"})
    to_stdin, stdin = anyio.create_memory_object_stream[bytes](16)
    stdout_lines, from_stdout = anyio.create_memory_object_stream[dict[str, Any]](16)
    stdout = cast(anyio.AsyncFile[str], _Stdout(stdout_lines))

    async def send(message: dict[str, Any]) -> None:
        await to_stdin.send(json.dumps(message).encode() + b"\n")

    async with (
        anyio.create_task_group() as group,
        checked_stdio_server(DecodeLimits(), gateway.audit, lines=stdin, stdout=stdout) as (
            read,
            write,
        ),
    ):
        options = gateway.server.create_initialization_options()
        group.start_soon(gateway.server.run, read, write, options)
        with anyio.fail_after(30):  # a line left unanswered would wait here for ever
            hello = {
                "protocolVersion": "2025-11-25",
                "capabilities": {"elicitation": {"form": {}}},  # may be asked for input
                "clientInfo": {"name": "stdio", "version": "1"},
            }
            await send({**INITIALIZE, "params": hello})
            assert (await from_stdout.receive())["id"] == 1
            await send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            call = {"name": "echo", "arguments": {"text": "x"}, "task": {}}
            await send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call})
            task_id = (await from_stdout.receive())["result"]["task"]["taskId"]
            await store.ask(task_id, "w#1", "elicitation/create", ASKED)
            await send(
                {"jsonrpc": "2.0", "id": 3, "method": "tasks/result", "params": {"taskId": task_id}}
            )
            question = await from_stdout.receive()  # the tool's request, on stdout
            answer = {"action": "accept", "content": {"yes": True}}
            await send({"jsonrpc": "2.0", "id": question["id"], "result": answer})
            await wait_until(lambda: bool(store.ports.answers), 30)
            await store.answer(task_id, result={"content": [{"type": "text", "text": "shipped"}]})
            result = await from_stdout.receive()
        await to_stdin.aclose()
    assert question["method"] == "elicitation/create"
    assert question["id"].startswith(RELAY_ID_PREFIX)
    assert question["params"]["_meta"][RELATED_TASK_META] == {"taskId": task_id}
    ((worker, frame),) = store.ports.answers
    reached = frame.decode()
    assert (worker, reached.id, reached.result) == ("raybus/fake/worker", "w#1", answer)  # type: ignore[union-attr]
    assert result["id"] == 3
    assert result["result"]["content"] == [{"type": "text", "text": "shipped"}]
