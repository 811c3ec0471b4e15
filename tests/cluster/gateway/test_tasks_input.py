"""2025-11-25 task input at the gateway: a task's tool asks its caller mid-call, the
request travels on the client's ``tasks/result`` stream and the answer back to the
worker (``cluster.gateway.tasks_input``).

The official SDK client talks to the gateway's SDK server in process; the store is the
real store core (``fake_tasks``), whose ``ask`` plays the worker relaying its tool's
request and whose recorded ``answers`` are what reached the worker. The same over real
HTTP, with the door's refusal of stray answers, is at the end.
"""

from __future__ import annotations

import asyncio

import httpx2 as httpx
import mcp
import mcp_types as types
import pytest
from mcp.client.context import ClientRequestContext
from mcp.client.session import ElicitationFnT
from mcp.client.streamable_http import streamable_http_client

from actors.tasks.model import RELATED_TASK_META, TaskStatus
from cluster.gateway.server import Gateway
from cluster.gateway.tasks_input import RELAY_ID_PREFIX
from tests.cluster.gateway.fake_bus import fake_bus
from tests.cluster.gateway.fake_tasks import FakeTaskStore
from tests.cluster.gateway.serving import serving
from tests.cluster.gateway.task_requests import create_task, task_get, task_result
from tests.cluster.gateway.test_refusal_metrics import refusals_of
from tests.cluster.gateway.test_tasks_gateway import gateway_with_tasks
from tests.waiting import wait_until
from transports.message import Response

WORKER = "raybus/fake/worker"
ASKED = {"message": "Ship it?", "requestedSchema": {"type": "object", "properties": {}}}
ACCEPT = {"action": "accept", "content": {"yes": True}}
# Bounds for a cold, loaded 2-core machine: they stop a hang, they measure nothing.
_WAIT_S = 30.0


def client_for(gateway: Gateway, elicit: ElicitationFnT | None) -> mcp.Client:
    return mcp.Client(gateway.server, mode="legacy", elicitation_callback=elicit)


def worker_answers(store: FakeTaskStore) -> list[Response]:
    """What reached the worker: the answers to its tool's requests, in order."""
    answers = []
    for destination, frame in store.ports.answers:
        assert destination == WORKER
        message = frame.decode()
        assert isinstance(message, Response)
        answers.append(message)
    return answers


class Asked:
    """An elicitation callback that records each request and answers as told."""

    def __init__(self, answer: types.ElicitResult | types.ErrorData | None) -> None:
        self.answer = answer
        self.params: list[types.ElicitRequestParams] = []
        self.seen = asyncio.Event()
        self.withdrawn = asyncio.Event()

    async def __call__(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        self.params.append(params)
        self.seen.set()
        if self.answer is None:  # never answers: waits until the server withdraws it
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.withdrawn.set()
                raise
        assert self.answer is not None
        return self.answer


async def test_tasks_result_relays_the_tools_request_and_the_answer_reaches_the_worker() -> None:
    store = FakeTaskStore()
    asked = Asked(types.ElicitResult(action="accept", content={"yes": True}))
    gateway = gateway_with_tasks(fake_bus(), store, {"echo": "optional"})
    async with client_for(gateway, asked) as client:
        task_id = (await create_task(client, "echo", {"text": "x"})).task.task_id
        assert store.created[0].accepts_input  # the client declared elicitation
        await store.ask(task_id, "w#1", "elicitation/create", ASKED)
        waiting = await task_get(client, task_id)
        assert waiting.status == "input_required"
        outcome = asyncio.create_task(task_result(client, task_id))
        await wait_until(lambda: bool(store.ports.answers), _WAIT_S)  # the client answered
        assert (await task_get(client, task_id)).status == "working"
        assert not outcome.done()  # tasks/result still blocks: the task has not ended
        await store.answer(task_id, result={"content": [{"type": "text", "text": "shipped"}]})
        result = await outcome
    (params,) = asked.params
    assert params.message == "Ship it?"
    assert params.meta is not None
    assert dict(params.meta)[RELATED_TASK_META] == {"taskId": task_id}
    (answer,) = worker_answers(store)
    assert answer.id == "w#1"  # the worker's own id, never the client's
    assert answer.result == ACCEPT
    assert result.content == [types.TextContent(text="shipped")]
    assert result.meta == {RELATED_TASK_META: {"taskId": task_id}}


async def test_an_error_answer_reaches_the_worker_as_the_requests_error() -> None:
    store = FakeTaskStore()
    declined = types.ErrorData(code=-32042, message="the user closed the dialog", data={"x": 1})
    gateway = gateway_with_tasks(fake_bus(), store, {"echo": "optional"})
    async with client_for(gateway, Asked(declined)) as client:
        task_id = (await create_task(client, "echo", {"text": "x"})).task.task_id
        await store.ask(task_id, "w#7", "elicitation/create", ASKED)
        outcome = asyncio.create_task(task_result(client, task_id))
        await wait_until(lambda: bool(store.ports.answers), _WAIT_S)
        assert (await task_get(client, task_id)).status == "working"
        error = {"code": -32603, "message": "elicitation failed: the user closed the dialog"}
        await store.answer(task_id, error=error)  # the tool gave up, as ctx.elicit raised
        with pytest.raises(mcp.MCPError) as failed:
            await outcome
    (answer,) = worker_answers(store)
    assert answer.id == "w#7"
    assert answer.error is not None
    assert answer.error.to_json_dict() == {
        "code": -32042,
        "message": "the user closed the dialog",
        "data": {"x": 1},
    }
    assert failed.value.message == "elicitation failed: the user closed the dialog"


async def test_a_request_nobody_answers_is_withdrawn_when_its_task_ends() -> None:
    store = FakeTaskStore()
    silent = Asked(None)
    gateway = gateway_with_tasks(fake_bus(), store, {"echo": "optional"})
    async with client_for(gateway, silent) as client:
        task_id = (await create_task(client, "echo", {"text": "x"})).task.task_id
        await store.ask(task_id, "w#2", "elicitation/create", ASKED)
        outcome = asyncio.create_task(task_result(client, task_id))
        async with asyncio.timeout(_WAIT_S):
            await silent.seen.wait()
        await store.core.cancel(task_id, "anonymous")  # as the deadline sweeper ends it
        async with asyncio.timeout(_WAIT_S):
            await silent.withdrawn.wait()  # the gateway told the client: not needed
        with pytest.raises(mcp.MCPError) as ended:
            await outcome
    assert "cancelled" in ended.value.message
    (answer,) = worker_answers(store)  # the store told the worker once, with an error
    assert answer.id == "w#2"
    assert answer.error is not None
    assert answer.error.message == "the task was cancelled"


async def test_a_client_that_cannot_answer_gets_no_input_wait() -> None:
    store = FakeTaskStore()
    gateway = gateway_with_tasks(fake_bus(), store, {"echo": "optional"})
    async with client_for(gateway, None) as client:  # declares no elicitation
        task_id = (await create_task(client, "echo", {"text": "x"})).task.task_id
        await store.ask(task_id, "w#3", "elicitation/create", ASKED)
        still = await task_get(client, task_id)
    assert not store.created[0].accepts_input
    assert still.status == "working"  # refused at once: the tool fails fast
    (answer,) = worker_answers(store)
    assert answer.error is not None
    assert answer.error.code == -32601


async def test_each_outstanding_request_is_relayed_and_answered_on_its_own() -> None:
    store = FakeTaskStore()
    asked = Asked(types.ElicitResult(action="decline"))
    gateway = gateway_with_tasks(fake_bus(), store, {"echo": "optional"})
    async with client_for(gateway, asked) as client:
        task_id = (await create_task(client, "echo", {"text": "x"})).task.task_id
        await store.ask(task_id, "w#4", "elicitation/create", {**ASKED, "message": "one?"})
        await store.ask(task_id, "w#5", "elicitation/create", {**ASKED, "message": "two?"})
        outcome = asyncio.create_task(task_result(client, task_id))
        await wait_until(lambda: len(store.ports.answers) == 2, _WAIT_S)
        record = store.core.get(task_id, "anonymous")
        assert record is not None
        assert record.status is TaskStatus.WORKING
        await store.answer(task_id, result={"content": []})
        await outcome
    assert sorted(p.message for p in asked.params) == ["one?", "two?"]
    assert sorted(str(a.id) for a in worker_answers(store)) == ["w#4", "w#5"]
    assert all(a.result == {"action": "decline"} for a in worker_answers(store))


async def raw_session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    """A second, raw 2025-11-25 session on the same gateway: the headers its POSTs carry."""
    headers = {"accept": "application/json, text/event-stream"}
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {"elicitation": {}},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
    answer = await http.post(url, json=hello, headers=headers)
    assert answer.status_code == 200
    headers["mcp-session-id"] = answer.headers["mcp-session-id"]
    headers["mcp-protocol-version"] = "2025-11-25"
    ready = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await http.post(url, json=ready, headers=headers)).status_code == 202
    return headers


async def test_over_http_an_answer_counts_only_in_the_session_the_request_went_to() -> None:
    store = FakeTaskStore()
    gateway = gateway_with_tasks(fake_bus(), store, {"echo": "optional"})
    stray: list[httpx.Response] = []
    async with serving(gateway) as url, httpx.AsyncClient(timeout=_WAIT_S) as http:
        other = await raw_session(http, url)

        async def elicit(
            context: ClientRequestContext, params: types.ElicitRequestParams
        ) -> types.ElicitResult:
            # Another session answers first with the very id this session was sent.
            body = {"jsonrpc": "2.0", "id": context.request_id, "result": ACCEPT}
            stray.append(await http.post(url, json=body, headers=other))
            assert not store.ports.answers  # nothing crossed to the worker
            return types.ElicitResult(action="accept", content={"yes": False})

        client = mcp.Client(streamable_http_client(url), mode="legacy", elicitation_callback=elicit)
        async with client:
            task_id = (await create_task(client, "echo", {"text": "x"})).task.task_id
            await store.ask(task_id, "w#9", "elicitation/create", ASKED)
            outcome = asyncio.create_task(task_result(client, task_id))
            await wait_until(lambda: bool(store.ports.answers), _WAIT_S)
            await store.answer(task_id, result={"content": []})
            await outcome
        never_sent = {"jsonrpc": "2.0", "id": f"{RELAY_ID_PREFIX}nope", "result": ACCEPT}
        unknown = await http.post(url, json=never_sent, headers=other)
        not_ours = {"jsonrpc": "2.0", "id": 4242, "result": {}}
        passed_on = await http.post(url, json=not_ours, headers=other)
    (crossed,) = stray
    assert crossed.status_code == 400
    assert crossed.json()["id"] is None
    assert crossed.json()["error"]["code"] == -32600
    assert "awaits an answer on this session" in crossed.json()["error"]["message"]
    assert unknown.status_code == 400
    assert f"{RELAY_ID_PREFIX}nope" in unknown.json()["error"]["message"]
    assert passed_on.status_code == 202  # not a relay id: the SDK's own rules apply
    assert refusals_of(gateway.metrics)["unknown_response_id"] == 2  # counted by reason
    (answer,) = worker_answers(store)  # the right session's answer, once
    assert answer.id == "w#9"
    assert answer.result == {"action": "accept", "content": {"yes": False}}


async def test_over_http_a_request_nobody_answers_is_withdrawn_when_its_task_ends() -> None:
    store = FakeTaskStore()
    silent = Asked(None)
    gateway = gateway_with_tasks(fake_bus(), store, {"echo": "optional"})
    async with serving(gateway) as url:
        client = mcp.Client(streamable_http_client(url), mode="legacy", elicitation_callback=silent)
        async with client:
            task_id = (await create_task(client, "echo", {"text": "x"})).task.task_id
            await store.ask(task_id, "w#10", "elicitation/create", ASKED)
            outcome = asyncio.create_task(task_result(client, task_id))
            async with asyncio.timeout(_WAIT_S):
                await silent.seen.wait()
            await store.core.cancel(task_id, "anonymous")
            async with asyncio.timeout(_WAIT_S):
                await silent.withdrawn.wait()  # notifications/cancelled reached the client
            with pytest.raises(mcp.MCPError) as ended:
                await outcome
    assert "cancelled" in ended.value.message


async def test_two_open_results_both_get_the_request_the_first_answer_wins() -> None:
    store = FakeTaskStore()
    silent = Asked(None)
    prompt = Asked(None)  # told its answer once the other session holds the request
    gateway = gateway_with_tasks(fake_bus(), store, {"echo": "optional"})
    async with client_for(gateway, prompt) as first, client_for(gateway, silent) as second:
        task_id = (await create_task(first, "echo", {"text": "x"})).task.task_id
        await store.ask(task_id, "w#11", "elicitation/create", ASKED)
        waiting = asyncio.create_task(task_result(second, task_id))
        async with asyncio.timeout(_WAIT_S):
            await silent.seen.wait()
        prompt.answer = types.ElicitResult(action="accept", content={"yes": True})
        answered = asyncio.create_task(task_result(first, task_id))
        await wait_until(lambda: bool(store.ports.answers), _WAIT_S)
        async with asyncio.timeout(_WAIT_S):
            await silent.withdrawn.wait()  # the other session's copy is withdrawn
        await store.answer(task_id, result={"content": []})
        await answered
        await waiting
    (answer,) = worker_answers(store)  # one answer reached the worker
    assert answer.result == ACCEPT
