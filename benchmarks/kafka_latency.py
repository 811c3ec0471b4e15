"""Request-reply latency and one-way throughput of KafkaTransport on a real broker.

``python -m benchmarks kafka``: uses the broker at ``$RAYBUS_KAFKA_BOOTSTRAP`` or starts
one (full JIT, unlike the test broker, so the broker is not the bottleneck). Reports:

- round trip: a client sends a request to a request topic, an echo side receives it,
  produces the response to the client's response topic and acks; p50/p99 over 500
  round trips after a warm-up, each request acked-by-broker before the next.
- one-way: 10,000 notifications produced with up to 256 sends in flight, received and
  acked one by one; messages per second from first send to last ack, once with every
  ack waiting for its commit and once with acks committed every 50 ms.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cluster.services.kafka import DEFAULT_JVM_OPTIONS, KAFKA_BOOTSTRAP_ENV, KafkaService
from cluster.services.state import default_cache_dir
from transports.envelope import Envelope
from transports.kafka.transport import KafkaTransport, KafkaTransportConfig
from transports.message import Notification, Request, Response

ROUND_TRIPS = 500
WARM_UP = 50
ONE_WAY = 10_000
IN_FLIGHT = 256
BOUND_S = 120.0

CALL = Request(id=0, method="tools/call", params={"name": "add", "arguments": {"a": 2, "b": 3}})


@asynccontextmanager
async def _broker() -> AsyncIterator[str]:
    existing = os.environ.get(KAFKA_BOOTSTRAP_ENV)
    if existing:
        yield existing
        return
    full_jit = tuple(o for o in DEFAULT_JVM_OPTIONS if not o.startswith("-XX:TieredStopAtLevel"))
    service = KafkaService(default_cache_dir(), jvm_options=full_jit)
    await service.start()
    try:
        yield service.bootstrap
    finally:
        await service.stop()


def _config(bootstrap: str, **fields: object) -> KafkaTransportConfig:
    return KafkaTransportConfig.model_validate({"bootstrap": bootstrap, **fields})


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _echo(server: KafkaTransport) -> None:
    while True:
        delivery = await server.receive()
        request = delivery.message
        assert isinstance(request, Request)
        await server.send(Response.success(request.id, {"echo": request.params}), delivery.envelope)
        await delivery.ack()


async def _round_trips(bootstrap: str, name: str) -> list[tuple[str, str]]:
    requests, responses = f"{name}.requests", f"{name}.responses"
    client = KafkaTransport(
        _config(bootstrap, send_topic=requests, receive_topics=(responses,), group_id=f"{name}-c")
    )
    server = KafkaTransport(_config(bootstrap, receive_topics=(requests,), group_id=f"{name}-s"))
    async with client, server:
        echo = asyncio.create_task(_echo(server))
        try:
            samples: list[float] = []
            for i in range(WARM_UP + ROUND_TRIPS):
                envelope = Envelope(client_id="bench", request_id=str(i), reply_to=responses)
                start = time.perf_counter()
                await client.send(CALL.model_copy(update={"id": i}), envelope)
                delivery = await client.receive()
                await delivery.ack()
                if i >= WARM_UP:
                    samples.append(time.perf_counter() - start)
        finally:
            echo.cancel()
            await asyncio.gather(echo, return_exceptions=True)
    return [
        ("kafka round trip p50", f"{_percentile(samples, 0.50) * 1e3:.2f} ms"),
        ("kafka round trip p99", f"{_percentile(samples, 0.99) * 1e3:.2f} ms"),
        ("kafka round trip mean", f"{statistics.fmean(samples) * 1e3:.2f} ms"),
    ]


async def _one_way(bootstrap: str, name: str, commit_interval_ms: int) -> list[tuple[str, str]]:
    topic = f"{name}.stream-{commit_interval_ms}"
    sender = KafkaTransport(_config(bootstrap, send_topic=topic))
    receiver = KafkaTransport(
        _config(
            bootstrap,
            receive_topics=(topic,),
            group_id=f"{topic}-r",
            commit_interval_ms=commit_interval_ms,
        )
    )
    async with sender, receiver:
        window = asyncio.Semaphore(IN_FLIGHT)

        async def send_one(i: int) -> None:
            try:
                await sender.send(Notification(method="tick", params={"i": i}))
            finally:
                window.release()

        async def produce() -> None:
            sends = []
            for i in range(ONE_WAY):
                await window.acquire()
                sends.append(asyncio.create_task(send_one(i)))
            await asyncio.gather(*sends)

        start = time.perf_counter()
        producing = asyncio.create_task(produce())
        for _ in range(ONE_WAY):
            delivery = await receiver.receive()
            await delivery.ack()
        await producing
        elapsed = time.perf_counter() - start
    commits = "commit per ack" if commit_interval_ms == 0 else f"commit /{commit_interval_ms} ms"
    return [(f"kafka one-way {ONE_WAY:,} ({commits})", f"{ONE_WAY / elapsed:,.0f} msg/s")]


async def _run() -> list[tuple[str, str]]:
    async with _broker() as bootstrap:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        async with asyncio.timeout(BOUND_S):
            rows = await _round_trips(bootstrap, name)
            rows += await _one_way(bootstrap, name, commit_interval_ms=0)
            rows += await _one_way(bootstrap, name, commit_interval_ms=50)
    return rows


def run() -> list[tuple[str, str]]:
    return asyncio.run(_run())


if __name__ == "__main__":
    for label, value in run():
        print(f"{label:<32}  {value}")
