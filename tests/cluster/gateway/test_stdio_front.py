"""`raybus up --stdio`: every line gets the codec's checks, as HTTP bodies and /ws frames do.

The gateway (over a fake bus, no Ray) is served through the stdio front with the
process's stdin and stdout replaced by in-memory lines.
"""

from __future__ import annotations

import json
from typing import Any, cast

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from cluster.gateway.server import Gateway
from cluster.gateway.stdio_front import checked_stdio_server
from tests.cluster.gateway.fake_bus import fake_bus
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
