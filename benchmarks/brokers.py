"""B6-B7: the broker backends, beside what the broker itself allows.

raybus side: ``BusClient`` -> Kafka topic / SQS queue -> one of 2 workers (``echo``)
-> response topic / queue -> ``BusClient``. ``echo`` is read-only, so the workers skip
the exactly-once ledger for it; a third side calls ``echo_once`` (the same tool with no
such promise, through the ledger), reported in the row's notes and details.

Anchor: the same request-reply with no Ray and no MCP, on the same broker - a client
that sends, an echo that answers, each reply matched to its caller by id:

- Kafka: ``KafkaTransport`` on both ends, committing every 20 ms as the bus's backend
  does (the broker's and aiokafka's own floor for a round trip).
- SQS: raw aioboto3 ``send_message`` / ``receive_message`` / ``delete_message_batch``
  against the same moto endpoint (moto is one Python process: its own limit).

Each round has two phases per side, half the round's duration each: one caller (p50 /
p99 latency, the row's latency columns) and 64 callers (calls/s, the row's figure).
Kafka is the project's own (``cluster.services``, full JIT as a broker benchmark wants),
or the broker at ``$RAYBUS_KAFKA_BOOTSTRAP``; SQS is a moto server started for the run,
or ``$RAYBUS_SQS_ENDPOINT``. A broker that cannot start skips its row.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from benchmarks.measure import Call, RoundResult, closed_loop
from benchmarks.processes import cpu_seconds, descendants, thread_cpu_seconds
from benchmarks.report import Row, Side, comparison_notes, side_from_rounds
from benchmarks.workloads import BenchContext, Family, Skip, Workload, compare_loops, running_bus
from cluster.services.base import LocalService
from cluster.services.errors import ServiceError

__all__ = ["KAFKA", "SQS"]

B6 = Workload("B6", "Kafka backend request-reply", "p50 <= 10 ms, >= 2,000 calls/s")
B7 = Workload("B7", "SQS backend (moto) request-reply", "reported, moto's limit beside")
CALLERS = 64
_KAFKA_P50_MS = 10.0
_KAFKA_RATE = 2000.0
_COMMIT_INTERVAL_MS = 20  # the bus's Kafka backend default
_RECEIVERS = 2  # concurrent long polls on each side of the SQS anchor
# A fresh broker's JVM compiles its hot paths under the first load: measured, its JIT
# compiler threads took a third of the broker's CPU for the first ~15 s of 64 callers
# (rate 950 -> 1,550 calls/s as they finished), so rounds started then measured the
# JIT. Each side is run in turn until a slice passes where they take under this share.
_JIT_THREADS = ("C1 Compiler", "C2 Compiler")  # HotSpot's names, cut to 15 characters
_JIT_SETTLED_SHARE = 0.05
_JIT_SLICE_S = 2.0
_JIT_WARMUP_MAX_S = 40.0
_ECHO = {"text": "x"}
# A third side on the bus: ``echo`` without its read-only annotation, so every call
# passes the exactly-once ledger (two actor round trips) as a state-changing tool does.
_LEDGER = "raybus, ledger"
_LEDGER_TOOL = "echo_once"


class _Replies:
    """Callers waiting for their reply, by request id; one reader resolves them."""

    def __init__(self) -> None:
        self._ids = itertools.count()
        self._waiting: dict[str, asyncio.Future[None]] = {}

    def expect(self) -> tuple[str, asyncio.Future[None]]:
        key = str(next(self._ids))
        future = self._waiting[key] = asyncio.get_running_loop().create_future()
        return key, future

    def resolve(self, key: str) -> None:
        future = self._waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(None)


@contextlib.asynccontextmanager
async def _service(service: LocalService, existing_env: str, what: str) -> AsyncIterator[str]:
    """A running service's endpoint: ``$existing_env`` if set, else ``service`` started."""
    existing = os.environ.get(existing_env)
    if existing:
        yield existing
        return
    try:
        await service.start()
    except (ServiceError, OSError) as exc:
        raise Skip(f"{what} did not start: {str(exc).splitlines()[0]}") from exc
    try:
        yield service.endpoint
    finally:
        await service.stop()


async def _compare(
    ctx: BenchContext, sides: dict[str, Call], groups: Callable[[], dict[str, list[int]]]
) -> tuple[dict[str, list[RoundResult]], dict[str, list[RoundResult]]]:
    """Interleaved rounds of one caller (latency), then of 64 callers (calls/s)."""
    half = max(0.5, ctx.duration_s / 2)
    phases = []
    for callers in (1, CALLERS):
        phases.append(
            await compare_loops(
                sides, callers=callers, duration_s=half, rounds=ctx.rounds, groups=groups
            )
        )
    return phases[0], phases[1]


async def _until_the_jit_settles(sides: dict[str, Call], broker_pid: int | None) -> float | None:
    """Load the broker until its JIT is done (see ``_JIT_SETTLED_SHARE``); seconds it took.

    None: the broker is not a local process of this run (``$RAYBUS_KAFKA_BOOTSTRAP``), or
    it still compiled when the bound passed.
    """
    if broker_pid is None:
        return None
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < _JIT_WARMUP_MAX_S:
        broker_before = cpu_seconds(broker_pid)
        jit_before = thread_cpu_seconds(broker_pid, _JIT_THREADS)
        for call in sides.values():
            await closed_loop([call] * CALLERS, _JIT_SLICE_S / len(sides))
        broker_after = cpu_seconds(broker_pid)
        if broker_before is None or broker_after is None:
            return None  # the broker is gone: the rounds will say so
        jit = thread_cpu_seconds(broker_pid, _JIT_THREADS) - jit_before
        if jit <= _JIT_SETTLED_SHARE * max(broker_after - broker_before, 1e-9):
            return loop.time() - started
    return None


def _row(
    workload: Workload,
    labels: tuple[str, str],
    latency: dict[str, list[RoundResult]],
    rate: dict[str, list[RoundResult]],
) -> tuple[Row, Side, Side]:
    sides = []
    for name, label in zip(("raybus", "anchor"), labels, strict=True):
        side = side_from_rounds(label, rate[name])
        one = side_from_rounds(label, latency[name])
        side.p50_ms, side.p99_ms = one.p50_ms, one.p99_ms
        side.errors += one.errors
        side.first_error = side.first_error or one.first_error
        sides.append(side)
    raybus, anchor = sides
    row = Row.compared(
        workload.id,
        workload.title,
        workload.goal,
        "calls/s",
        raybus,
        anchor,
        latency_at=f"latency: 1 caller; calls/s: {CALLERS} callers",
    )
    loaded = {n: side_from_rounds(n, rate[n]) for n in ("raybus", "anchor")}
    row.details = {f"p50_p99_ms_at_{CALLERS}": {n: (s.p50_ms, s.p99_ms) for n, s in loaded.items()}}
    row.notes = comparison_notes(raybus, anchor)
    if _LEDGER in rate:
        # The row's tool is read-only, so its calls skip the ledger; this side is the
        # same tool without that promise, each call begun and completed in the ledger.
        ledgered = side_from_rounds(_LEDGER, rate[_LEDGER])
        one = side_from_rounds(_LEDGER, latency[_LEDGER])
        row.details["ledger_path"] = {
            "calls_per_s": ledgered.value,
            "p50_ms": one.p50_ms,
            "p99_ms": one.p99_ms,
            "errors": ledgered.errors + one.errors,
        }
        row.notes.append(
            f"a tool without the read-only promise ({_LEDGER_TOOL}, through the exactly-once"
            f" ledger): {ledgered.value or 0:,.0f} calls/s, p50/p99"
            f" {one.p50_ms or 0:.1f} / {one.p99_ms or 0:.1f} ms"
            + (f", {ledgered.errors + one.errors} failed" if ledgered.errors + one.errors else "")
        )
    return row, raybus, anchor


def _sides(bus: Any, anchor_call: Call) -> dict[str, Call]:
    return {
        "raybus": lambda: bus.call_tool("echo", _ECHO),
        "anchor": anchor_call,
        _LEDGER: lambda: bus.call_tool(_LEDGER_TOOL, _ECHO),
    }


def _bus_config(ctx: BenchContext, family: str, **backend: Any) -> dict[str, Any]:
    return {
        "name": ctx.bus_name(family),
        "pools": [
            {
                "name": "bench",
                "server": "benchmarks.server:server",
                "min_workers": 2,
                "max_workers": 2,
            }
        ],
        "autoscaler": {"enabled": False},
        **backend,
    }


def _groups(service: LocalService) -> Callable[[], dict[str, list[int]]]:
    def groups() -> dict[str, list[int]]:
        broker = [service.pid] if service.pid is not None else []
        tree = [p for p in descendants() if p not in broker]
        return {"bench process": [os.getpid()], "ray": tree, "broker": broker}

    return groups


# --- Kafka -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _kafka_anchor(bootstrap: str) -> AsyncIterator[Call]:
    from transports.envelope import Envelope
    from transports.kafka.transport import KafkaTransport, KafkaTransportConfig
    from transports.message import Request, Response

    name = f"bench-{uuid.uuid4().hex[:8]}"
    requests, responses = f"{name}.requests", f"{name}.responses"

    def config(**fields: Any) -> KafkaTransportConfig:
        return KafkaTransportConfig.model_validate(
            {"bootstrap": bootstrap, "commit_interval_ms": _COMMIT_INTERVAL_MS, **fields}
        )

    client = KafkaTransport(
        config(send_topic=requests, receive_topics=(responses,), group_id=f"{name}-c")
    )
    server = KafkaTransport(config(receive_topics=(requests,), group_id=f"{name}-s"))
    replies = _Replies()
    answering: set[asyncio.Task[None]] = set()

    async def answer(delivery: Any) -> None:
        request = delivery.message
        await server.send(Response.success(request.id, {"echo": request.params}), delivery.envelope)
        await delivery.ack()

    async def echo() -> None:
        while True:  # answers concurrently, as the bus's workers do
            task = asyncio.create_task(answer(await server.receive()))
            answering.add(task)
            task.add_done_callback(answering.discard)

    async def read() -> None:
        while True:
            delivery = await client.receive()
            await delivery.ack()
            if delivery.envelope is not None:
                replies.resolve(delivery.envelope.request_id)

    async def call() -> None:
        key, future = replies.expect()
        envelope = Envelope(client_id="bench", request_id=key, reply_to=responses)
        await client.send(Request(id=int(key), method="tools/call", params=_ECHO), envelope)
        await future

    async with client, server:
        loops = [asyncio.create_task(echo()), asyncio.create_task(read())]
        try:
            yield call
        finally:
            for task in [*loops, *answering]:
                task.cancel()
            await asyncio.gather(*loops, *answering, return_exceptions=True)


async def _run_kafka(ctx: BenchContext) -> None:
    from cluster.services.kafka import DEFAULT_JVM_OPTIONS, KAFKA_BOOTSTRAP_ENV, KafkaService
    from cluster.services.state import default_cache_dir

    if not os.environ.get(KAFKA_BOOTSTRAP_ENV) and shutil.which("java") is None:
        raise Skip("Kafka needs java on PATH (or $RAYBUS_KAFKA_BOOTSTRAP)")
    full_jit = [o for o in DEFAULT_JVM_OPTIONS if not o.startswith("-XX:TieredStopAtLevel")]
    service = KafkaService(default_cache_dir(), jvm_options=full_jit)
    ctx.progress("B6: starting Kafka")
    async with _service(service, KAFKA_BOOTSTRAP_ENV, "Kafka") as bootstrap:
        config = _bus_config(ctx, "kafka", backend="kafka", kafka={"bootstrap": bootstrap})
        async with running_bus(config) as bus, _kafka_anchor(bootstrap) as anchor_call:
            sides = _sides(bus, anchor_call)
            ctx.progress("B6: loading the broker until its JIT settles")
            warmed_s = await _until_the_jit_settles(sides, service.pid)
            ctx.progress(f"B6: {ctx.rounds} rounds x {ctx.duration_s:g} s per side")
            latency, rate = await _compare(ctx, sides, _groups(service))
    row, raybus, _ = _row(
        B6, ("bus over Kafka, 2 workers", "KafkaTransport echo, no Ray/MCP"), latency, rate
    )
    row.details["broker_jit_warmup_s"] = warmed_s
    row.notes.append(
        f"the broker was loaded {warmed_s:.0f} s first, until its JIT compilers took under"
        f" {_JIT_SETTLED_SHARE:.0%} of its CPU"
        if warmed_s is not None
        else "rounds began without a settled broker JIT (not a local broker, or it"
        f" still compiled after {_JIT_WARMUP_MAX_S:g} s)"
    )
    row.met = (
        (raybus.p50_ms or float("inf")) <= _KAFKA_P50_MS
        and (raybus.value or 0) >= _KAFKA_RATE
        and not raybus.errors
    )
    ctx.emit(row)


# --- SQS ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _sqs_anchor(endpoint: str) -> AsyncIterator[Call]:
    import aioboto3
    from botocore.config import Config

    from cluster.services.sqs import sqs_client_kwargs

    kwargs = sqs_client_kwargs(endpoint)
    kwargs["config"] = kwargs["config"].merge(Config(max_pool_connections=CALLERS + 8))
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    replies = _Replies()
    async with aioboto3.Session().client("sqs", **kwargs) as sqs:
        requests = (await sqs.create_queue(QueueName=f"{prefix}-requests"))["QueueUrl"]
        responses = (await sqs.create_queue(QueueName=f"{prefix}-responses"))["QueueUrl"]

        async def take(queue: str) -> list[dict[str, Any]]:
            got = await sqs.receive_message(
                QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            messages: list[dict[str, Any]] = got.get("Messages", [])
            return messages

        async def delete(queue: str, messages: list[dict[str, Any]]) -> None:
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ]
            await sqs.delete_message_batch(QueueUrl=queue, Entries=entries)

        async def echo() -> None:
            while True:
                if messages := await take(requests):
                    await asyncio.gather(
                        *(
                            sqs.send_message(QueueUrl=responses, MessageBody=m["Body"])
                            for m in messages
                        )
                    )
                    await delete(requests, messages)  # only after the answers were sent

        async def read() -> None:
            while True:
                if messages := await take(responses):
                    for message in messages:
                        replies.resolve(message["Body"])
                    await delete(responses, messages)

        async def call() -> None:
            key, future = replies.expect()
            await sqs.send_message(QueueUrl=requests, MessageBody=key)
            await future

        loops = [asyncio.create_task(f()) for f in (echo, read) for _ in range(_RECEIVERS)]
        try:
            yield call
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            for queue in (requests, responses):
                with contextlib.suppress(Exception):
                    await sqs.delete_queue(QueueUrl=queue)


async def _run_sqs(ctx: BenchContext) -> None:
    from cluster.services.sqs import SQS_ENDPOINT_ENV, SqsService

    service = SqsService()
    ctx.progress("B7: starting the SQS endpoint (moto)")
    async with _service(service, SQS_ENDPOINT_ENV, "the SQS endpoint (moto)") as endpoint:
        config = _bus_config(ctx, "sqs", backend="sqs", sqs={"endpoint_url": endpoint})
        async with running_bus(config) as bus, _sqs_anchor(endpoint) as anchor_call:
            ctx.progress(f"B7: {ctx.rounds} rounds x {ctx.duration_s:g} s per side")
            latency, rate = await _compare(
                ctx,
                _sides(bus, anchor_call),
                _groups(service),
            )
    row, _, _ = _row(B7, ("bus over SQS, 2 workers", "raw aioboto3 echo, same moto"), latency, rate)
    ctx.emit(row)


KAFKA = Family("kafka", (B6,), _run_kafka)
SQS = Family("sqs", (B7,), _run_sqs)
