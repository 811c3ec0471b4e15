"""Namespaced pools on the broker backends: SQS (moto) and Kafka between clients and workers.

Broker clients route each call themselves, by discovery's names: a namespaced call must
reach the pool's own queue or topic, and its server must receive its own name.
"""

from __future__ import annotations

import mcp
import pytest
from mcp.shared.exceptions import MCPError

from cluster.client import CallError
from tests.cluster.bus_helpers import bus_config, running_bus, running_gateway

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FUNCTIONS = "cluster.examples.functions"  # hypotenuse, word_count
ONE_WORKER = {"min_workers": 1, "max_workers": 1, "warm_spares": 0}


@pytest.mark.sqs
async def test_namespaced_tools_are_listed_and_called_through_the_gateway_over_sqs(
    ray_session: None, sqs_endpoint: str
) -> None:
    config = bus_config(
        [
            {"name": "geo", "tools": FUNCTIONS, "namespace": "geo", **ONE_WORKER},
            {"name": "maps", "tools": FUNCTIONS, "namespace": "maps", **ONE_WORKER}
            | {"include": ["hyp*"]},
        ],
        backend="sqs",
        sqs={
            "endpoint_url": sqs_endpoint,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        },
        namespace_separator=".",
    )
    async with (
        running_gateway(config) as url,
        mcp.Client(url, mode="legacy") as client,
    ):
        listed = await client.list_tools()
        geo = await client.call_tool("geo.hypotenuse", {"a": 3, "b": 4})
        maps = await client.call_tool("maps.hypotenuse", {"a": 6, "b": 8})
        with pytest.raises(MCPError) as hidden:
            await client.call_tool("maps.word_count", {"text": "a b"})
    assert {tool.name for tool in listed.tools} == {
        "geo.hypotenuse",
        "geo.word_count",
        "maps.hypotenuse",
    }
    assert geo.structured_content == {"result": 5.0}
    assert maps.structured_content == {"result": 10.0}
    assert (hidden.value.code, hidden.value.message) == (-32602, "Unknown tool: maps.word_count")


@pytest.mark.kafka
async def test_namespaced_tools_are_listed_and_called_over_kafka(
    ray_session: None, kafka_bootstrap: str
) -> None:
    config = bus_config(
        [
            {"name": "geo", "tools": FUNCTIONS, "namespace": "geo", **ONE_WORKER},
            {"name": "maps", "tools": FUNCTIONS, "namespace": "maps", **ONE_WORKER}
            | {"exclude": ["word_count"]},
        ],
        backend="kafka",
        kafka={"bootstrap": kafka_bootstrap, "partitions": 1},
    )
    async with running_bus(config) as client:
        names = {tool.name for tool in await client.list_tools()}
        geo = await client.call_tool("geo_word_count", {"text": "a b c"})
        maps = await client.call_tool("maps_hypotenuse", {"a": 6, "b": 8})
        with pytest.raises(CallError) as hidden:
            await client.call_tool("maps_word_count", {"text": "a b"})
    assert names == {"geo_hypotenuse", "geo_word_count", "maps_hypotenuse"}
    assert geo.structured_content == {"result": 3}
    assert maps.structured_content == {"result": 10.0}
    assert (hidden.value.code, hidden.value.message) == (-32602, "Unknown tool: maps_word_count")
