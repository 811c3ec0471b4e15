"""Durable clients' logic without Ray or a broker: the id, the request ids, the answers
no caller awaits (each once, bounded), and a durable link's close that cancels nothing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable

import pytest

from actors.router.breaker import BreakerConfig
from cluster.backends.broker import BrokerClientLink
from cluster.backends.ray import DURABLE_NEEDS_BROKER, RayBackend
from cluster.client import BusClient
from cluster.client_connection import ClientConnection
from cluster.config import ConfigError, parse_config
from cluster.durable import Answer, AnswerBuffer, client_name, new_incarnation
from cluster.naming import actor_names
from tests.cluster.backends.test_broker_client import FakeDiscovery, FakeHandles, FakeWire, call
from transports.envelope import CorrelationKey, Envelope
from transports.errors import CallError
from transports.frame import Frame
from transports.message import Response

_BOUND_S = 10.0  # stops a hang; nothing here waits on time


def reply(request_id: str, text: str = "ok", *, client_id: str = "job") -> Frame:
    envelope = Envelope(client_id=client_id, request_id=request_id, method="tools/call", name="t")
    result = {"content": [{"type": "text", "text": text}], "isError": False}
    return Frame.of(envelope, Response.success(1, result))


class RecordingLink:
    """A client link that keeps what it is given (send_tool's frames)."""

    reply_to = "replies-job"

    def __init__(self) -> None:
        self.submitted: list[Frame] = []
        self.cancelled: list[CorrelationKey] = []

    def submit(self, frames: list[Frame]) -> Awaitable[object] | None:
        self.submitted.extend(frames)
        return None

    def cancel(self, keys: list[CorrelationKey]) -> None:
        self.cancelled.extend(keys)

    async def receive(self) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


async def durable_connection() -> ClientConnection:
    connection = ClientConnection("b", discovery=None)
    connection.durable, connection.id_prefix = AnswerBuffer(max_answers=3), "0badcafe."
    connection.attach(RecordingLink())
    return connection


async def taken(buffer: AnswerBuffer) -> list[str]:
    """Every answer kept, once the buffer is closed."""
    await buffer.close()
    ids: list[str] = []
    async with asyncio.timeout(_BOUND_S):
        while (answer := await buffer.take()) is not None:
            ids.append(answer.request_id)
    return ids


@pytest.mark.parametrize("bad", ["", "a b", "x" * 65, "job/7", "jób", "a:b"])
def test_a_durable_id_outside_its_characters_is_refused_in_one_line(bad: str) -> None:
    with pytest.raises(ValueError) as raised:
        client_name("b", bad, None)
    message = str(raised.value)
    assert message.startswith("durable_id ")
    assert "\n" not in message
    assert "A-Z a-z 0-9 . _ -" in message


def test_no_durable_id_names_the_task_store_s_reply_address() -> None:
    # The store reads its answers at the client id "tasks": a durable client of that id
    # would read (and acknowledge) them.
    store_id = actor_names.tasks("b").rsplit("/", 1)[-1]
    assert client_name("b", store_id, None).rsplit("/", 1)[-1] != store_id


def test_a_durable_id_is_the_client_s_name_where_random_ones_differ() -> None:
    durable = client_name("b", "risk-job_7.A" + "x" * 52, None)
    assert durable.rsplit("/", 1) == [
        actor_names.client("b").rsplit("/", 1)[0],
        "durable.risk-job_7.A" + "x" * 52,
    ]
    assert client_name("b", None, None) != client_name("b", None, None)
    assert client_name("b", None, "raybus/b/inbox") == "raybus/b/inbox"


def test_a_durable_client_cannot_run_in_an_inbox_actor() -> None:
    with pytest.raises(ValueError, match="durable_id"):
        client_name("b", "job", "raybus/b/inbox")


def test_each_connection_has_its_own_incarnation_of_8_hex_digits() -> None:
    incarnations = {new_incarnation() for _ in range(50)}
    assert len(incarnations) == 50
    assert all(re.fullmatch(r"[0-9a-f]{8}\.", one) for one in incarnations)


async def test_a_redelivered_answer_no_caller_awaits_is_handed_out_once() -> None:
    connection = await durable_connection()
    for frame in (reply("old.1"), reply("old.2"), reply("old.1"), reply("old.2", "again")):
        await connection._dispatch(frame)
    assert connection.durable is not None
    assert await taken(connection.durable) == ["old.1", "old.2"]


async def test_the_same_request_id_of_two_sessions_is_two_answers() -> None:
    connection = await durable_connection()
    await connection._dispatch(reply("1", client_id="job"))
    await connection._dispatch(reply("1", client_id="job.s2"))
    assert connection.durable is not None
    assert await taken(connection.durable) == ["1", "1"]


async def test_an_awaited_answer_goes_to_its_caller_and_its_redelivery_nowhere() -> None:
    connection = await durable_connection()
    client = BusClient(connection, "job", "alice")
    calling = asyncio.ensure_future(client.call_tool("t", {}, timeout_s=60))
    async with asyncio.timeout(_BOUND_S):
        while not connection.pending:  # noqa: ASYNC110 - the call registers in a loop turn
            await asyncio.sleep(0)
    ((_, request_id),) = connection.pending
    assert request_id == "0badcafe.1"  # the incarnation keeps ids apart across connections
    await connection._dispatch(reply(request_id, "mine"))
    await connection._dispatch(reply(request_id, "mine"))  # the broker's redelivery
    async with asyncio.timeout(_BOUND_S):
        result = await calling
    assert result.content[0].text == "mine"  # type: ignore[union-attr]
    assert connection.durable is not None
    assert await taken(connection.durable) == []


async def test_an_answer_whose_caller_gave_up_waits_in_answers() -> None:
    connection = await durable_connection()
    client = BusClient(connection, "job", "alice")
    await connection._dispatch(reply("0badcafe.9", "late"))  # no caller: timed out, say
    async with asyncio.timeout(_BOUND_S):
        answer = await anext(client.answers())
    assert answer.request_id == "0badcafe.9"
    assert answer.tool_result().content[0].text == "late"  # type: ignore[union-attr]


async def test_a_full_buffer_holds_the_next_answer_back_until_one_is_taken() -> None:
    buffer = AnswerBuffer(max_answers=2)
    for number in (1, 2):
        await buffer.put(reply(str(number)).envelope, Response.success(1, {}))
    third = asyncio.ensure_future(buffer.put(reply("3").envelope, Response.success(1, {})))
    for _ in range(20):  # loop turns, not time: a put that could finish would have
        await asyncio.sleep(0)
    assert not third.done()
    assert len(buffer) == 2
    first = await buffer.take()
    assert first is not None
    assert first.request_id == "1"
    async with asyncio.timeout(_BOUND_S):
        await third
    assert await taken(buffer) == ["2", "3"]


async def test_send_tool_submits_at_once_and_returns_the_request_id() -> None:
    connection = await durable_connection()
    link = connection.link
    assert isinstance(link, RecordingLink)
    client = BusClient(connection, "job", "alice")
    ids = [await client.send_tool("t", {"n": n}, timeout_s=90) for n in (1, 2)]
    assert ids == ["0badcafe.1", "0badcafe.2"]
    envelopes = [frame.envelope for frame in link.submitted]
    assert [e.request_id for e in envelopes] == ids
    assert {(e.client_id, e.principal, e.reply_to, e.method, e.name) for e in envelopes} == {
        ("job", "alice", "replies-job", "tools/call", "t")
    }
    assert all(e.deadline_unix_s is not None for e in envelopes)
    assert connection.pending == {}  # nobody awaits them: their answers go to answers()


async def test_answers_and_send_tool_need_a_durable_client() -> None:
    connection = ClientConnection("b", discovery=None)
    connection.attach(RecordingLink())
    client = BusClient(connection, "c", "alice")
    with pytest.raises(ValueError, match="durable_id"):
        client.answers()
    with pytest.raises(ValueError, match="durable_id"):
        await client.send_tool("t")


async def test_answers_end_once_the_client_closes() -> None:
    connection = await durable_connection()
    client = BusClient(connection, "job", "alice")
    await connection._dispatch(reply("old.1"))
    await client.close()
    async with asyncio.timeout(_BOUND_S):
        ids = [answer.request_id async for answer in client.answers()]
    assert ids == ["old.1"]  # what was kept, then the end


def test_an_answer_that_is_an_error_raises_it() -> None:
    answer = Answer("x.1", Response.failure(1, -32602, "unknown tool"), "tools/call", "t")
    with pytest.raises(CallError) as raised:
        answer.tool_result()
    assert raised.value.code == -32602


async def test_a_durable_link_s_close_cancels_no_call() -> None:
    handles = FakeHandles()

    async def on_frame(frame: Frame) -> None:
        return None

    link = BrokerClientLink(
        FakeWire(),
        FakeDiscovery(),
        on_frame,
        bus="b",
        breaker=BreakerConfig(),
        handles=handles,  # type: ignore[arg-type]
        durable=True,
    )
    await link.start()
    await link.submit([call(1), call(2)])
    await link.close()
    assert handles.withdrawn == []
    assert all(told == [] for told in handles.cancelled.values())


async def test_a_ray_bus_refuses_a_durable_client_in_one_line() -> None:
    config = parse_config({"name": "b", "pools": [{"name": "p", "server": "m:s"}]})
    with pytest.raises(ValueError) as raised:
        await RayBackend(config).open_client(
            "raybus/b/client/job", None, None, _ignore, durable=True
        )
    assert str(raised.value) == DURABLE_NEEDS_BROKER
    assert "\n" not in DURABLE_NEEDS_BROKER
    assert "kafka or sqs" in DURABLE_NEEDS_BROKER
    assert "start_tool" in DURABLE_NEEDS_BROKER


async def _ignore(frame: Frame) -> None:
    return None


@pytest.mark.parametrize("seconds", [59, 1_209_601])
def test_sqs_response_retention_outside_sqs_bounds_is_one_config_error(seconds: int) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(
            {
                "name": "b",
                "backend": "sqs",
                "sqs": {"response_retention_s": seconds},
                "pools": [{"name": "p", "server": "m:s"}],
            }
        )
    assert [
        p for p in raised.value.problems if "response_retention_s" in p
    ] == raised.value.problems
    assert len(raised.value.problems) == 1


def test_durable_retention_defaults_to_a_day_on_both_brokers() -> None:
    kafka = parse_config(
        {
            "name": "b",
            "backend": "kafka",
            "kafka": {"bootstrap": "127.0.0.1:9092"},
            "pools": [{"name": "p", "server": "m:s"}],
        }
    )
    sqs = parse_config(
        {
            "name": "b",
            "backend": "sqs",
            "sqs": {"region": "eu-west-1"},
            "pools": [{"name": "p", "server": "m:s"}],
        }
    )
    assert kafka.kafka is not None
    assert sqs.sqs is not None
    assert kafka.kafka.response_retention_s == sqs.sqs.response_retention_s == 86_400
