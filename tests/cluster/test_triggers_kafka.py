"""Event triggers on a real Kafka broker and a real Ray: records in, results out.

The bus runs on the Ray backend (triggers need only their source's broker), with a pool
of :mod:`tests.cluster.trigger_server` whose ``work`` tool counts its runs in a file.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import ray
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from cluster.bus import TriggerStartFailed, bus_status, launch_bus, stop_bus
from cluster.cli.status import format_status
from cluster.config import BusConfig
from cluster.metrics.endpoint import MetricsCollector
from cluster.metrics.sources import bus_sources
from cluster.naming import actor_names, get_actor
from tests.cluster.bus_helpers import bus_config
from tests.cluster.metrics.prometheus_text import parse
from tests.faults.figures import figure
from tests.waiting import wait_until
from transports.errors import ConnectionClosed
from transports.kafka.admin import consumer_group_lag, ensure_topics

pytestmark = [pytest.mark.kafka, pytest.mark.ray]

POOL = {
    "name": "work",
    "server": "tests.cluster.trigger_server:server",
    "min_workers": 1,
    "max_workers": 1,
    "max_concurrency": 16,
}
# Generous: a cold, loaded 2-core machine; they stop a hang, they measure nothing.
_WAIT_S = 180.0


class TopicReader:
    """Every record of some topics from their start, kept as they arrive."""

    def __init__(self, bootstrap: str, *topics: str) -> None:
        self._consumer = AIOKafkaConsumer(
            *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
        )
        self.records: dict[str, list[Any]] = {topic: [] for topic in topics}

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def wait_for(self, done: Callable[[], bool], timeout_s: float = _WAIT_S) -> None:
        async with asyncio.timeout(timeout_s):
            while not done():
                batch = await self._consumer.getmany(timeout_ms=200)
                for partition, records in batch.items():
                    self.records[partition.topic] += records

    def keys(self, topic: str) -> set[str]:
        return {dict(r.headers)["raybus-trigger-key"].decode() for r in self.records[topic]}


def token_of(result: dict[str, Any]) -> str:
    structured = result["structuredContent"]
    token = structured.get("token") or structured["result"]["token"]
    assert isinstance(token, str)
    return token


def runs(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def trigger_config(
    bootstrap: str, topic: str, path: Path, backend: str = "ray", **trigger: Any
) -> BusConfig:
    return bus_config(
        [POOL],
        backend=backend,
        kafka={"bootstrap": bootstrap},
        triggers=[
            {
                "name": "work",
                "source": {"kafka": {"topic": topic}},
                "tool": "work",
                "arguments": {"token": "${value.token}", "path": str(path)},
                "output": {"kafka": {"topic": f"{topic}.out"}},
                **trigger,
            }
        ],
    )


@asynccontextmanager
async def running(config: BusConfig) -> AsyncIterator[None]:
    await launch_bus(config)
    try:
        yield
    finally:
        await stop_bus(config.name)


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=b"k%d" % i) for i, value in enumerate(values)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def trigger_row(config: BusConfig) -> dict[str, Any]:
    row: dict[str, Any] = (await bus_status(config.name))["triggers"]["work"]
    return row


async def eventually(config: BusConfig, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    async with asyncio.timeout(_WAIT_S):
        while not check(row := await trigger_row(config)):  # noqa: ASYNC110 - actor counters
            await asyncio.sleep(0.5)
    return row


async def test_records_call_the_tool_and_results_and_failures_land_in_their_topics(
    ray_session: None, kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topic, path = unique_name, tmp_path / "runs"
    await ensure_topics(kafka_bootstrap, [topic], partitions=2)
    config = trigger_config(kafka_bootstrap, topic, path)
    good = [json.dumps({"token": f"t{i}"}).encode() for i in range(60)]
    not_json = [b"\xffnot json %d" % i for i in range(3)]  # no value.token: mapping fails
    wrong_type = [json.dumps({"token": i}).encode() for i in range(2)]  # the tool refuses
    async with running(config), TopicReader(kafka_bootstrap, f"{topic}.out", f"{topic}.dlq") as out:
        # Produced once the bus is up: "start: latest" reads everything produced after.
        await produce(kafka_bootstrap, topic, good + not_json + wrong_type)
        await out.wait_for(
            lambda: len(out.keys(f"{topic}.out")) == 60 and len(out.keys(f"{topic}.dlq")) == 5
        )
        row = await eventually(config, lambda r: r["lag"] == 0 and r["ok"] == 60)
        shown = format_status(await bus_status(config.name)).splitlines()  # `raybus status`
        # `raybus up --metrics-port`'s page, collected as it collects it.
        collector = MetricsCollector(config.name, bus_sources(config), max_age_s=0)
        page = parse(await collector.page())
    records = {
        labels["outcome"]: value
        for name, labels, value in page.samples
        if name == "raybus_trigger_records_total" and labels["trigger"] == "work"
    }
    assert records == {
        "ok": 60,
        "skipped": 0,
        "mapping_failed": 3,
        "call_failed": 2,
        "output_failed": 0,
    }
    assert page.value("raybus_trigger_lag", trigger="work") == 0
    assert page.value("raybus_trigger_in_flight", trigger="work") == 0
    header = shown.index(next(line for line in shown if line.startswith("trigger ")))
    cells = shown[header + 1].split()
    assert cells[:4] + cells[5:] == ["work", f"kafka:{topic}", "work", "0", "0/16", "5", "running"]
    assert row["dead_lettered"] == 5
    assert row["consumed"] == 65
    assert sorted(runs(path)) == sorted(f"t{i}" for i in range(60))  # each ran once
    outputs = [json.loads(r.value) for r in out.records[f"{topic}.out"]]
    assert sorted(token_of(o["result"]) for o in outputs) == sorted(f"t{i}" for i in range(60))
    assert {o["tool"] for o in outputs} == {"work"}
    dead = {r.value: (r.key, dict(r.headers)) for r in out.records[f"{topic}.dlq"]}
    for value in not_json:
        key, headers = dead[value]  # the record's own bytes, unchanged
        assert headers["raybus-error-stage"] == b"mapping"
        assert headers["raybus-error-message"] == b"the record has no value.token"
        assert key is not None
        assert key.startswith(b"k")
    for value in wrong_type:
        _, headers = dead[value]
        assert headers["raybus-error-stage"] == b"call"
        # The tool's own refusal (isError), or the server's schema check (-32602).
        assert headers["raybus-error-code"] in (b"isError", b"-32602")
    lag = await consumer_group_lag(kafka_bootstrap, f"{config.name}.trigger.work", topic)
    assert lag == 0  # every record committed, once its output or dead letter was written


async def test_a_killed_trigger_loses_no_record_and_runs_none_twice(
    ray_session: None, kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topic, path, gate = unique_name, tmp_path / "runs", tmp_path / "gate"
    await ensure_topics(kafka_bootstrap, [topic], partitions=2)
    arguments = {"token": "${value.token}", "path": str(path), "gate": "${value.gate}"}
    config = trigger_config(kafka_bootstrap, topic, path, max_in_flight=8, arguments=arguments)
    tokens = [f"t{i}" for i in range(300)]
    # The first 100 run through; the rest wait for the gate: the kill finds 8 in hand.
    values = [{"token": t, "gate": "" if i < 100 else str(gate)} for i, t in enumerate(tokens)]
    payloads = [json.dumps(v).encode() for v in values]
    output = f"{topic}.out"
    async with running(config), TopicReader(kafka_bootstrap, output) as out:
        await produce(kafka_bootstrap, topic, payloads[:100])
        await out.wait_for(lambda: len(out.keys(output)) == 100)
        await produce(kafka_bootstrap, topic, payloads[100:])
        await wait_until(lambda: len(runs(path)) == 108, _WAIT_S)  # 8 gated calls started
        # As if its process died mid-stream: Ray restarts it, the group redelivers what
        # it had not committed.
        ray.kill(get_actor(actor_names.trigger(config.name, "work", 0)), no_restart=False)
        gate.touch()
        await out.wait_for(lambda: len(out.keys(output)) == len(tokens))
        row = await eventually(config, lambda r: r["lag"] == 0)
    assert sorted(set(runs(path))) == sorted(tokens)  # nothing lost
    by_key: dict[str, list[Any]] = {}
    for r in out.records[output]:
        by_key.setdefault(dict(r.headers)["raybus-trigger-key"].decode(), []).append(r)
    repeated = {key: records for key, records in by_key.items() if len(records) > 1}
    for key, records in repeated.items():  # at least once: a repeat is the same record's
        assert len({dict(r.headers)["raybus-source"] for r in records}) == 1, key
    # The 8 records in hand at the kill came again to the restarted trigger, whose calls
    # carried the same idempotency keys: the ledger answered them with their first runs'
    # results (those runs went on without their dead caller), never a second run.
    extra_runs = len(runs(path)) - len(tokens)
    assert extra_runs == 0
    assert sorted(runs(path)) == sorted(tokens)
    assert repeated == {}  # no output had been written for them
    figure(
        f"trigger killed with 8 records in hand: 300/300 written after its restart, "
        f"{extra_runs} tool runs repeated, {len(repeated)} outputs repeated, "
        f"{row['consumed']} records received by the new process"
    )


async def test_the_trigger_holds_at_most_max_in_flight_and_commits_nothing_unfinished(
    ray_session: None, kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topic, path, gate = unique_name, tmp_path / "runs", tmp_path / "gate"
    await ensure_topics(kafka_bootstrap, [topic], partitions=2)
    arguments = {"token": "${value.token}", "path": str(path), "gate": str(gate)}
    config = trigger_config(kafka_bootstrap, topic, path, max_in_flight=4, arguments=arguments)
    tokens = [f"t{i}" for i in range(40)]
    async with running(config), TopicReader(kafka_bootstrap, f"{topic}.out") as out:
        await produce(kafka_bootstrap, topic, [json.dumps({"token": t}).encode() for t in tokens])
        held = await eventually(config, lambda r: r["in_flight"] == 4 and r["lag"] == 40)
        # Two further lag readings while held: the trigger took no fifth record meanwhile.
        readings = held["lag_readings"]
        still = await eventually(config, lambda r: r["lag_readings"] >= readings + 2)
        assert still["lag"] == 40
        assert (still["consumed"], still["in_flight"], still["ok"]) == (4, 4, 0)
        assert len(runs(path)) == 4
        assert out.records[f"{topic}.out"] == []
        gate.touch()
        await out.wait_for(lambda: len(out.keys(f"{topic}.out")) == len(tokens))
        done = await eventually(config, lambda r: r["lag"] == 0)
    assert done["ok"] == len(tokens)
    assert sorted(runs(path)) == sorted(tokens)


async def test_a_trigger_on_a_missing_topic_fails_the_start_in_one_line(
    ray_session: None, kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    config = trigger_config(kafka_bootstrap, unique_name, tmp_path / "runs")
    with pytest.raises(TriggerStartFailed) as caught:
        await launch_bus(config)
    assert str(caught.value) == f"trigger work: kafka topic {unique_name!r} does not exist"
    name = actor_names.trigger(config.name, "work", 0)

    def gone() -> bool:  # nothing of the bus is left behind (Ray forgets a name promptly)
        try:
            get_actor(name)
        except ConnectionClosed:
            return True
        return False

    await wait_until(gone, 30)


async def test_a_trigger_calls_through_a_bus_whose_backend_is_kafka_too(
    ray_session: None, kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    topic, path = unique_name, tmp_path / "runs"
    await ensure_topics(kafka_bootstrap, [topic], partitions=2)
    config = trigger_config(kafka_bootstrap, topic, path, backend="kafka", replicas=2)
    tokens = [f"t{i}" for i in range(30)]
    async with running(config), TopicReader(kafka_bootstrap, f"{topic}.out") as out:
        await produce(kafka_bootstrap, topic, [json.dumps({"token": t}).encode() for t in tokens])
        await out.wait_for(lambda: len(out.keys(f"{topic}.out")) == len(tokens))
        row = await eventually(config, lambda r: r["lag"] == 0 and r["ok"] == len(tokens))
    assert sorted(runs(path)) == sorted(tokens)
    assert (row["replicas"], row["answering"]) == (2, 2)  # two actors, one consumer group
