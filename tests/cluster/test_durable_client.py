"""Answers that outlive their caller, on Kafka and SQS (issue 21, deliverable 6).

A durable client sends calls of a slow tool and closes while they run: they run on (the
``record`` tool's file shows each run), their answers wait in the broker, the next
connection with the same ``durable_id`` receives exactly those, and the one after it
none. An ordinary client's close still cancels its calls (the ``nap`` tool's marker).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aioboto3
import pytest
import pytest_asyncio
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from cluster.client import BusClient
from cluster.naming import actor_names, get_actor_async
from cluster.services.sqs import sqs_client_kwargs
from tests.cluster.bus_helpers import running_bus
from tests.faults.broker_bus import BROKERS, KIT_SERVER, Broker, broker_bus, broker_of, lines
from tests.waiting import wait_until
from transports.errors import ConnectionClosed

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

# Bounds for a cold, loaded 2-core machine: they stop a hang, they measure nothing.
_OUTCOME_S = 180.0
# Long enough that the client is gone before any call ends (five sends take well under
# a second); each call's line in the file proves it ran to its end.
_RUN_S = 15.0


@pytest.fixture(scope="module", params=BROKERS)
def broker(request: pytest.FixtureRequest) -> Broker:
    return broker_of(request)  # started here, outside the event loop


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bus(broker: Broker, ray_session: None) -> AsyncIterator[BusClient]:
    async with running_bus(broker_bus(broker, {"server": KIT_SERVER, "min_workers": 1})) as client:
        yield client


async def collected(client: BusClient, count: int) -> dict[str, str]:
    """The first ``count`` answers of ``client.answers()``: request id -> text."""
    got: dict[str, str] = {}
    async with asyncio.timeout(_OUTCOME_S):
        async for answer in client.answers():
            assert answer.request_id not in got  # never the same answer twice
            got[answer.request_id] = answer.tool_result().content[0].text  # type: ignore[union-attr]
            if len(got) == count:
                break
    return got


async def test_answers_made_while_a_durable_client_was_away_come_to_its_next_connection_once(
    bus: BusClient, tmp_path: Path
) -> None:
    durable_id = f"job-{uuid.uuid4().hex[:8]}"
    runs = tmp_path / "runs"
    tokens = [f"call{n}" for n in range(5)]
    first = await BusClient.connect(bus.bus, durable_id=durable_id)
    try:
        sent = {
            await first.send_tool(
                "record", {"path": str(runs), "token": token, "seconds": _RUN_S}, timeout_s=600
            ): token
            for token in tokens
        }
    finally:
        await first.close()  # cancels nothing: the calls run on
    assert len(sent) == 5
    await wait_until(lambda: len(lines(runs)) == 5, _OUTCOME_S)
    assert sorted(lines(runs)) == tokens  # each ran once, to its end

    second = await BusClient.connect(bus.bus, durable_id=durable_id)
    try:
        got = await collected(second, 5)
    finally:
        await second.close()
    assert got == sent  # exactly those five, by request id, each with its own answer
    assert all(re.fullmatch(r"[0-9a-f]{8}\.[1-5]", rid) for rid in got)  # <incarnation>.<n>

    # Nothing twice: the next connection's first answer is the one it asks for now.
    third = await BusClient.connect(bus.bus, durable_id=durable_id)
    try:
        probe = await third.send_tool(
            "record", {"path": str(tmp_path / "probe"), "token": "probe"}, timeout_s=600
        )
        assert probe not in sent  # a new incarnation: ids never collide across connections
        assert await collected(third, 1) == {probe: "probe"}
    finally:
        await third.close()
    assert sorted(lines(runs)) == tokens


async def retention_of(broker: Broker, reply_to: str) -> int:
    """How long the broker keeps what waits at ``reply_to`` (seconds), as it reports it."""
    if broker.kind == "kafka":
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.address)
        await admin.start()
        try:
            topic = ConfigResource(ConfigResourceType.TOPIC, reply_to)
            [response] = await admin.describe_configs([topic])
        finally:
            await admin.close()
        [resource] = response.resources
        entries = {entry[0]: entry[1] for entry in resource[4]}
        return int(entries["retention.ms"]) // 1000
    async with aioboto3.Session().client("sqs", **sqs_client_kwargs(broker.address)) as sqs:
        url = (await sqs.get_queue_url(QueueName=reply_to))["QueueUrl"]
        reply = await sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["MessageRetentionPeriod"]
        )
        return int(reply["Attributes"]["MessageRetentionPeriod"])


async def test_a_durable_client_s_answers_wait_as_long_as_the_config_says(
    bus: BusClient, broker: Broker
) -> None:
    client = await BusClient.connect(bus.bus, durable_id=f"kept-{uuid.uuid4().hex[:8]}")
    reply_to = client._connection.reply_to
    await client.close()
    # Read after close: an SQS durable queue outlives its client (Kafka topics always do).
    assert await retention_of(broker, reply_to) == 86_400  # the default: a day


async def test_an_ordinary_client_s_close_still_cancels_its_calls(
    bus: BusClient, tmp_path: Path
) -> None:
    marker = tmp_path / "cancelled"
    discovery = await get_actor_async(actor_names.discovery(bus.bus))

    async def in_flight() -> int:
        return sum(worker.in_flight for worker in await discovery.workers.remote())

    async def until(condition: Callable[[int], bool]) -> None:
        async with asyncio.timeout(_OUTCOME_S):
            while not condition(await in_flight()):  # noqa: ASYNC110 - heartbeats say so
                await asyncio.sleep(0.2)

    # A heartbeat can still count the module's previous calls: seen as this call running,
    # the close came before the nap started, the ledger withdrew it and no marker came.
    await until(lambda count: count == 0)
    client = await BusClient.connect(bus.bus)
    calling = asyncio.ensure_future(
        client.call_tool("nap", {"seconds": 600, "marker": str(marker)}, timeout_s=900)
    )
    await until(lambda count: count > 0)
    await client.close()
    with pytest.raises(ConnectionClosed):
        await calling
    await wait_until(marker.exists, _OUTCOME_S)  # the worker cancelled the tool
