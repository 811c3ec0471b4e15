"""SqsLagReader against the local SQS endpoint (moto): one client for every reading,
the depth it reports, and a close that releases that client."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cluster.backends.sqs import SqsLagReader, _sqs_config, request_queue
from tests.cluster.bus_helpers import bus_config
from transports.message import Notification
from transports.sqs.transport import SqsTransport

pytestmark = pytest.mark.sqs

BOUND_S = 60.0
POOL = "kit"


def config_for(endpoint: str) -> Any:
    pool = {"name": POOL, "server": "cluster.examples.testkit:server"}
    sqs = {"endpoint_url": endpoint, "aws_access_key_id": "testing"}
    sqs["aws_secret_access_key"] = "testing"
    return bus_config([pool], backend="sqs", sqs=sqs)  # a bus name (queue prefix) of its own


async def test_the_reader_keeps_one_client_reports_depth_and_closes_it(
    sqs_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_for(sqs_endpoint)
    started: list[SqsTransport] = []
    real_start = SqsTransport.start

    async def recorded_start(self: SqsTransport) -> None:
        started.append(self)
        await real_start(self)

    monkeypatch.setattr(SqsTransport, "start", recorded_start)
    sender = SqsTransport(_sqs_config(config, send_queue=request_queue(POOL)))
    async with asyncio.timeout(BOUND_S):
        await sender.start()
        try:
            await sender.ensure_queue(request_queue(POOL))  # a worker would have made it
            reader = SqsLagReader(config)
            assert await reader.depth(POOL) == 0
            for n in range(3):
                await sender.send(Notification(method="notifications/lag", params={"n": n}))
            depths = [await reader.depth(POOL) for _ in range(5)]
            await reader.close()
        finally:
            await sender.close()
    assert depths == [3] * 5
    readers = [t for t in started if t is not sender]
    assert len(readers) == 1, "every reading reuses the reader's one client"
    assert not readers[0].is_connected(), "close released the reader's client"
