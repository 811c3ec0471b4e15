"""Request-reply latency and one-way throughput of the SQS transport.

Runs against ``$RAYBUS_SQS_ENDPOINT`` or a moto server started for the run (moto is a
single Python process, so these numbers bound our client overhead plus moto's, not AWS's).

- request-reply: 200 round trips, one at a time, over a request queue and a response
  queue with an echo task on the other side that acks after it answered; p50 / p99.
- one-way: 2,000 messages from 8 concurrent senders while one receiver takes batches of
  10 and acks each; messages per second end to end. Senders and receiver run together,
  as in steady state. moto's cost per call grows with the number of messages a queue
  holds (it scans them on every call), so this number is moto-bound: the same workload
  straight through aioboto3 measured within 10% of it.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cluster.services.sqs import SQS_ENDPOINT_ENV, SQS_REGION, SqsService
from transports.envelope import Envelope
from transports.message import Notification, Request, Response
from transports.sqs.transport import SqsConfig, SqsTransport

ROUND_TRIPS = 200
ONE_WAY = 2000
SENDERS = 8
_BOUND_S = 300.0
_DUMMY = "testing"  # moto accepts any credentials; never send real ones to it


@asynccontextmanager
async def _endpoint() -> AsyncIterator[str]:
    existing = os.environ.get(SQS_ENDPOINT_ENV)
    if existing:
        yield existing
        return
    service = SqsService()
    await service.start()
    try:
        yield service.endpoint
    finally:
        await service.stop()


def _config(endpoint: str, prefix: str, **queues: str) -> SqsConfig:
    return SqsConfig(
        endpoint_url=endpoint,
        region=SQS_REGION,
        queue_prefix=prefix,
        wait_time_seconds=5,
        aws_access_key_id=_DUMMY,
        aws_secret_access_key=_DUMMY,
        **queues,
    )


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _echo(server: SqsTransport) -> None:
    while True:
        delivery = await server.receive()
        request = delivery.message
        assert isinstance(request, Request)
        await server.send(Response.success(request.id, {"ok": True}), delivery.envelope)
        await delivery.ack()  # only after the response is sent


async def _request_reply(endpoint: str, prefix: str) -> list[tuple[str, str]]:
    client = SqsTransport(
        _config(endpoint, prefix, send_queue="requests", receive_queue="responses-c1")
    )
    server = SqsTransport(_config(endpoint, prefix, receive_queue="requests"))
    async with client, server:
        echo = asyncio.create_task(_echo(server))
        reply_to = client.receive_queue_name
        samples: list[float] = []
        try:
            for i in range(ROUND_TRIPS):
                envelope = Envelope(client_id="c1", request_id=str(i), reply_to=reply_to)
                start = time.perf_counter()
                await client.send(Request(id=i, method="tools/call"), envelope)
                delivery = await client.receive()
                samples.append(time.perf_counter() - start)
                await delivery.ack()
        finally:
            echo.cancel()
            await asyncio.wait({echo})
        await client.delete_queue("requests")
        await client.delete_queue("responses-c1")
    return [
        (f"sqs request-reply p50 ({ROUND_TRIPS} round trips)", f"{_ms(samples, 0.5)} ms"),
        (f"sqs request-reply p99 ({ROUND_TRIPS} round trips)", f"{_ms(samples, 0.99)} ms"),
        ("sqs request-reply mean", f"{statistics.fmean(samples) * 1e3:.1f} ms"),
    ]


def _ms(samples: list[float], fraction: float) -> str:
    return f"{_percentile(samples, fraction) * 1e3:.1f}"


async def _one_way(endpoint: str, prefix: str) -> float:
    """Seconds to move ONE_WAY messages through the transport, senders and receiver
    running together (so the queue stays shallow, as in steady state)."""
    sender = SqsTransport(_config(endpoint, prefix, send_queue="stream"))
    receiver = SqsTransport(_config(endpoint, prefix, receive_queue="stream"))
    message = Notification(method="tick", params={"payload": "x" * 200})
    async with sender, receiver:

        async def send_share(count: int) -> None:
            for _ in range(count):
                await sender.send(message)

        async def receive_all() -> None:
            for _ in range(ONE_WAY):
                delivery = await receiver.receive()
                await delivery.ack()

        start = time.perf_counter()
        await asyncio.gather(
            receive_all(), *(send_share(ONE_WAY // SENDERS) for _ in range(SENDERS))
        )
        elapsed = time.perf_counter() - start
        await receiver.delete_queue("stream")
    return elapsed


async def _main() -> list[tuple[str, str]]:
    async with _endpoint() as endpoint, asyncio.timeout(_BOUND_S):
        prefix = f"bench-{uuid.uuid4().hex[:8]}-"
        rows = await _request_reply(endpoint, prefix)
        elapsed = await _one_way(endpoint, prefix)
    label = f"({ONE_WAY} msgs, {SENDERS} senders, batch 10, ack each)"
    return [*rows, (f"sqs one-way {label}", f"{ONE_WAY / elapsed:,.0f} msg/s")]


def run() -> list[tuple[str, str]]:
    return asyncio.run(_main())


if __name__ == "__main__":
    for label, value in run():
        print(f"{label:<48}  {value}")
