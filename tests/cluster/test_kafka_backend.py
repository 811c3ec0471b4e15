"""The bus with Kafka between clients and workers, on the real broker and a real Ray."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import mcp
import pytest

from cluster.backends.kafka import kafka_lag
from cluster.bus import bus_status
from cluster.naming import actor_names, get_actor
from tests.cluster.bus_helpers import bus_config, running_bus, running_gateway
from tests.waiting import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

KIT = {"name": "kit", "server": "cluster.examples.testkit:server"}
# Imported only inside workers (importing it here would wrap this process's broker source).
EXIT_BEFORE_ACK = "tests.cluster.exit_before_ack:server"


def kafka_config(bootstrap: str, workers: int, server: str = KIT["server"], **kafka: Any) -> Any:
    return bus_config(
        [
            {
                **KIT,
                "server": server,
                "min_workers": workers,
                "max_workers": 2,
                "max_concurrency": 16,
            }
        ],
        backend="kafka",
        kafka={"bootstrap": bootstrap, "partitions": 4, **kafka},
    )


async def lag_drains(config: Any, pool: str = "kit", timeout_s: float = 30) -> None:
    """Commits may trail the answers by the commit interval: wait (bounded) for zero lag."""
    async with asyncio.timeout(timeout_s):
        while await kafka_lag(config, pool) != 0:  # noqa: ASYNC110 - broker state
            await asyncio.sleep(0.1)


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def test_an_mcp_client_reaches_workers_over_kafka_with_progress(
    ray_session: None, kafka_bootstrap: str
) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with (
        running_gateway(kafka_config(kafka_bootstrap, 1)) as url,
        mcp.Client(url, mode="legacy") as client,
    ):
        result = await client.call_tool(
            "count_with_progress", {"steps": 3}, progress_callback=on_progress
        )
        echoed = await client.call_tool("echo", {"text": "over kafka"})
    assert result.structured_content == {"result": 3}
    assert seen == [1, 2, 3]
    assert echoed.structured_content == {"result": "over kafka"}


async def test_two_workers_run_each_of_1000_requests_exactly_once(
    ray_session: None, kafka_bootstrap: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "executions"
    config = kafka_config(kafka_bootstrap, 2)
    async with running_bus(config) as client:
        calls = [("record", {"path": str(ledger), "token": f"t{i}"}) for i in range(1000)]
        results = await client.map_tool_calls(calls, concurrency=64, timeout_s=120)
        assert [r.structured_content for r in results] == [{"result": f"t{i}"} for i in range(1000)]  # type: ignore[union-attr]
        assert sorted(lines(ledger)) == sorted(f"t{i}" for i in range(1000))
        status = await bus_status(config.name)
        assert status["pools"]["kit"]["workers"] == 2
        await lag_drains(config)


@pytest.mark.parametrize(
    ("tool", "runs"),
    [
        # Redelivered to the surviving worker, which answers from the ledger: run once.
        ("record", 1),
        # Annotated read-only, so the workers skip the ledger for it: the redelivered
        # copy runs again, and the caller, who had its answer already, drops the second
        # one as a repeat, never handing it to another call.
        ("record_read_only", 2),
    ],
)
async def test_a_call_whose_worker_died_before_its_commit_runs_once_unless_read_only(
    ray_session: None, kafka_bootstrap: str, tmp_path: Path, tool: str, runs: int
) -> None:
    ledger = tmp_path / "executions"
    # The worker that runs the tool exits after answering it, before committing it.
    config = kafka_config(kafka_bootstrap, 2, server=EXIT_BEFORE_ACK)
    async with running_bus(config) as client:
        result = await client.call_tool(tool, {"path": str(ledger), "token": "t"}, timeout_s=120)
        assert result.structured_content == {"result": "t"}
        # The fault really happened: the worker that ran it exited before committing.
        await wait_until(lambda: (tmp_path / "executions.exited").exists(), timeout_s=60)
        # Redelivery waits for the dead member's session to expire (10 s) and for a
        # rebalance (two, with the replacement worker joining): bounded for a loaded
        # machine. Then the partition's offset moved past the record.
        await lag_drains(config, timeout_s=120)
        assert lines(ledger) == ["t"] * runs
        later = await client.call_tool("echo", {"text": "its own answer"}, timeout_s=60)
        assert later.structured_content == {"result": "its own answer"}


async def test_a_worker_joining_mid_stream_loses_nothing(
    ray_session: None, kafka_bootstrap: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "executions"
    config = kafka_config(kafka_bootstrap, 1)
    async with running_bus(config) as client:
        calls = [
            ("record", {"path": str(ledger), "token": f"r{i}", "seconds": 0.02}) for i in range(300)
        ]
        burst = asyncio.ensure_future(client.map_tool_calls(calls, concurrency=32, timeout_s=120))
        await wait_until(lambda: len(lines(ledger)) >= 30, timeout_s=60)
        supervisor = get_actor(actor_names.supervisor(config.name))
        assert await supervisor.scale.remote("kit", 2) == 2  # the group rebalances
        results = await burst
        assert [r.structured_content for r in results] == [{"result": f"r{i}"} for i in range(300)]  # type: ignore[union-attr]
        assert sorted(lines(ledger)) == sorted(f"r{i}" for i in range(300))


async def test_a_record_that_is_not_json_goes_to_the_dlq_and_the_pool_moves_on(
    ray_session: None, kafka_bootstrap: str
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from cluster.backends.kafka import topics_for

    config = kafka_config(kafka_bootstrap, 1)
    topics = topics_for(config)
    async with running_bus(config) as client:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topics.requests_for_capability("kit"), b"this is not json")
        finally:
            await producer.stop()
        result = await client.call_tool("echo", {"text": "still flowing"}, timeout_s=60)
        assert result.structured_content == {"result": "still flowing"}
        consumer = AIOKafkaConsumer(
            topics.dlq_topic(), bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            async with asyncio.timeout(60):
                record = await consumer.getone()
        finally:
            await consumer.stop()
        assert record.value == b"this is not json"
        await lag_drains(config, timeout_s=60)
