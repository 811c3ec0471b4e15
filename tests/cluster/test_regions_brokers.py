"""Regions on the broker backends: clients route by region, and a worker refuses a request
of another region however it got there (README "Regions").

The bypass: anything holding broker credentials can publish straight to a pool's topic
(Kafka) or queue (SQS). A raw client wire publishes a request labelled eu to the us
pool's; the us worker answers 1010 and its server never runs it (its file stays empty).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from cluster.backends.broker import BrokerWire
from cluster.backends.kafka import KafkaClientWire
from cluster.backends.sqs import SqsClientWire
from cluster.client import BusClient
from cluster.config import BusConfig
from tests.cluster.bus_helpers import bus_config, running_bus
from tests.faults.broker_bus import BROKERS, Broker, broker_of
from transports.envelope import Envelope
from transports.frame import Frame
from transports.labels import with_labels
from transports.message import Request, Response

pytestmark = [pytest.mark.ray, pytest.mark.slow]

WIRES: dict[str, Callable[[BusConfig, str], BrokerWire]] = {
    "kafka": KafkaClientWire,
    "sqs": SqsClientWire,
}


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> Broker:
    return broker_of(request)


def runs(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def test_a_request_published_to_another_regions_pool_is_refused_by_the_worker(
    ray_session: None, broker: Broker, tmp_path: Path
) -> None:
    files = {region: tmp_path / f"{region}.runs" for region in ("eu", "us")}
    pools = [
        {
            "name": f"calc-{region}",
            "server": "tests.cluster.regional_server:server",
            "labels": {"region": region},
            "env": {"RAYBUS_TEST_RUNS": str(path)},
            "min_workers": 1,
            "max_workers": 1,
            "warm_spares": 0,
        }
        for region, path in files.items()
    ]
    config = bus_config(pools, backend=broker.kind, **broker.settings(), router={"regions": {}})
    async with running_bus(config):
        eu = await BusClient.connect(config.name, labels={"region": "eu"})
        try:
            for i in range(5):
                result = await eu.call_tool("append", {"key": f"eu-{i}"}, timeout_s=60)
                assert result.structured_content == {"result": f"eu-{i}"}
        finally:
            await eu.close()
        assert (runs(files["eu"]), runs(files["us"])) == ([f"eu-{i}" for i in range(5)], [])

        wire: BrokerWire = WIRES[broker.kind](config, "raw-publisher")
        await wire.start()
        try:
            envelope = Envelope(
                client_id="raw-publisher",
                request_id="bypass-1",
                reply_to=wire.reply_to,
                method="tools/call",
                name="append",
            ).with_deadline_in(60)
            request = Request(
                id=1, method="tools/call", params={"name": "append", "arguments": {"key": "x"}}
            )
            frame = Frame.of(with_labels(envelope, {"region": "eu"}), request)
            assert await wire.send(wire.destination_for_pool("calc-us"), [frame]) == []
            async with asyncio.timeout(60):
                delivery = await wire.next_delivery()
        finally:
            await wire.close()
    answer = delivery.message
    assert isinstance(answer, Response)
    assert answer.error is not None
    assert answer.error.code == 1010
    assert answer.error.data == {"region": "eu", "tool": "append", "reason": "outside"}
    assert runs(files["us"]) == []
