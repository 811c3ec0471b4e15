"""2025-11-25 task input end to end: an official SDK client over real HTTP, the gateway,
the bus's task store and a real worker whose tool (the tasks fixture's ``confirm``) asks
its caller mid-call with the SDK's ``ctx.elicit``.

The client follows the spec's flow: it polls ``tasks/get`` until ``input_required``,
then calls ``tasks/result``, answers the elicitation that arrives on that call's stream
and receives the task's result on it. The same over the gateway's WebSocket (a raw
client: the SDK has none), where the question arrives on the one socket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import mcp
import mcp_types as types
import pytest
import pytest_asyncio
from mcp.client.context import ClientRequestContext
from mcp.client.session import ElicitationFnT
from mcp.client.streamable_http import streamable_http_client

from actors.tasks.model import RELATED_TASK_META
from cluster.gateway.tasks_input import RELAY_ID_PREFIX
from tests.cluster.bus_helpers import bus_config, running_gateway
from tests.cluster.gateway.task_requests import create_task, task_get, task_result

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module")]

# The run deadline of the pool's tasks: how long a request nobody answers can hold its
# tool. Bounds below are sized for a cold, loaded 2-core machine; they measure nothing.
_RUN_TIMEOUT_S = 20.0
_OUTCOME_S = 120.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def url(ray_session: None) -> AsyncIterator[str]:
    pool = {
        "name": "asks",
        "server": "cluster.examples.tasks_fixture:server",
        "tasks": {"tools": {"confirm": "optional"}, "run_timeout_s": _RUN_TIMEOUT_S},
    }
    async with running_gateway(bus_config([pool])) as served:
        yield served


def client_for(url: str, elicit: ElicitationFnT) -> mcp.Client:
    # The SDK's own HTTP client: its SSE read timeout (300 s) outlasts a silent task.
    return mcp.Client(streamable_http_client(url), mode="legacy", elicitation_callback=elicit)


async def until_input_required(client: mcp.Client, task_id: str) -> types.GetTaskResult:
    """Poll ``tasks/get`` as the spec's requestor does (bounded)."""
    async with asyncio.timeout(_OUTCOME_S):
        while True:
            polled = await task_get(client, task_id)
            if polled.status != "working":
                return polled
            await asyncio.sleep((polled.poll_interval or 200) / 1000)  # the poll interval


async def test_the_tools_question_arrives_on_tasks_result_and_its_answer_lets_it_finish(
    url: str,
) -> None:
    seen: list[tuple[object, types.ElicitRequestParams]] = []

    async def elicit(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        seen.append((context.request_id, params))
        return types.ElicitResult(action="accept", content={"yes": True})

    async with client_for(url, elicit) as client:
        created = await create_task(client, "confirm", {"question": "Ship it?"})
        task_id = created.task.task_id
        waiting = await until_input_required(client, task_id)
        assert waiting.status == "input_required"
        result = await task_result(client, task_id)
        done = await task_get(client, task_id)
    ((request_id, params),) = seen
    assert isinstance(request_id, str)
    assert request_id.startswith(RELAY_ID_PREFIX)  # minted by the gateway, per session
    assert params.message == "Ship it?"
    assert params.meta is not None
    assert dict(params.meta)[RELATED_TASK_META] == {"taskId": task_id}
    assert isinstance(result.content[0], types.TextContent)
    assert result.content[0].text == "confirmed"
    assert result.meta is not None
    assert result.meta[RELATED_TASK_META] == {"taskId": task_id}
    assert done.status == "completed"


async def test_an_error_answer_is_raised_in_the_tool_and_ends_its_task(url: str) -> None:
    async def elicit(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ErrorData:
        return types.ErrorData(code=-32042, message="the user closed the dialog")

    async with client_for(url, elicit) as client:
        task_id = (await create_task(client, "confirm", {"question": "Ship it?"})).task.task_id
        await until_input_required(client, task_id)
        with pytest.raises(mcp.MCPError) as failed:
            await task_result(client, task_id)
        ended = await task_get(client, task_id)
    # The tool's ctx.elicit raised the client's error and the tool let it go: its call
    # ended with that JSON-RPC error, which tasks/result answers "exactly".
    assert (failed.value.code, failed.value.message) == (-32042, "the user closed the dialog")
    assert ended.status == "failed"


async def test_a_question_nobody_answers_holds_the_tool_no_longer_than_its_run_deadline(
    url: str,
) -> None:
    withdrawn = asyncio.Event()

    async def elicit(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        try:
            await asyncio.Event().wait()  # never answers
        except asyncio.CancelledError:
            withdrawn.set()
            raise
        raise AssertionError("unreachable")

    async with client_for(url, elicit) as client:
        task_id = (await create_task(client, "confirm", {"question": "Ship it?"})).task.task_id
        await until_input_required(client, task_id)
        with pytest.raises(mcp.MCPError) as failed:
            await task_result(client, task_id)
        ended = await task_get(client, task_id)
        async with asyncio.timeout(_OUTCOME_S):
            await withdrawn.wait()  # the gateway withdrew the request from the client
    assert ended.status == "failed"
    assert "deadline" in failed.value.message


async def test_over_the_websocket_the_question_and_its_answer_travel_the_same_socket(
    url: str,
) -> None:
    import websockets

    ws_url = url.replace("http://", "ws://").replace("/mcp", "/ws")
    ids = iter(range(1, 1_000))

    async def ask(ws: Any, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send a request; answer the relay's elicitations meanwhile; its response."""
        number = next(ids)
        await ws.send(
            json.dumps({"jsonrpc": "2.0", "id": number, "method": method, "params": params})
        )
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message.get("method") == "elicitation/create":
                asked.append(message)
                answer = {"action": "accept", "content": {"yes": True}}
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": answer}))
            elif message.get("id") == number and "method" not in message:
                return message

    asked: list[dict[str, Any]] = []
    async with asyncio.timeout(_OUTCOME_S), websockets.connect(ws_url) as ws:
        hello = {
            "protocolVersion": "2025-11-25",
            "capabilities": {"elicitation": {"form": {}}},
            "clientInfo": {"name": "ws", "version": "1"},
        }
        assert "result" in await ask(ws, "initialize", hello)
        await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        call = {"name": "confirm", "arguments": {"question": "Ship it?"}, "task": {}}
        task_id = (await ask(ws, "tools/call", call))["result"]["task"]["taskId"]
        while True:  # the spec's requestor polls tasks/get at the poll interval
            polled = await ask(ws, "tasks/get", {"taskId": task_id})
            if polled["result"]["status"] != "working":
                break
            await asyncio.sleep(polled["result"].get("pollInterval", 200) / 1000)
        assert polled["result"]["status"] == "input_required"
        result = await ask(ws, "tasks/result", {"taskId": task_id})
    ((question,),) = [asked]
    assert question["id"].startswith(RELAY_ID_PREFIX)
    assert question["params"]["message"] == "Ship it?"
    assert question["params"]["_meta"][RELATED_TASK_META] == {"taskId": task_id}
    assert result["result"]["content"][0]["text"] == "confirmed"
