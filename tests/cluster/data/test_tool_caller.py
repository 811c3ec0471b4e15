"""ToolCaller in real Ray Data jobs against a real bus on every backend."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import aioboto3
import pyarrow as pa
import pytest
import ray
from ray.exceptions import RayError

from cluster.bus import bus_status, launch_bus, stop_bus
from cluster.client import BusClient, CallError
from cluster.config import BusConfig
from cluster.data import ToolCaller
from tests.cluster.bus_helpers import bus_config, running_bus, slow_call_breaker
from transports.errors import BusErrorCode

pytestmark = [pytest.mark.ray, pytest.mark.slow]

T = TypeVar("T")

SCORING = {"name": "scoring", "server": "cluster.examples.scoring:server", "max_workers": 1}
KIT = {"name": "kit", "server": "cluster.examples.testkit:server", "max_workers": 1}
ROWS = 300
# A hung job fails the test instead of the session; a healthy one takes seconds.
JOB_TIMEOUT_S = 180


def review(i: int) -> str | None:
    """Every 50th review is empty (a tool error), every 75th is null (invalid arguments)."""
    if i % 75 == 0:
        return None
    if i % 50 == 0:
        return ""
    return ("great product", "awful product", "great but awful")[i % 3] + f" #{i}"


def expected_score(i: int) -> float:
    return (1.0, -1.0, 0.0)[i % 3]


def run_job(job: Callable[[], T]) -> T:
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(job).result(timeout=JOB_TIMEOUT_S)
    finally:
        pool.shutdown(wait=False)  # a hung job fails the test; its thread is abandoned


def score(
    on_bus: str, rows: list[dict[str, Any]], actors: int = 1, **options: Any
) -> list[dict[str, Any]]:
    """``rows`` scored by ToolCaller; ``options`` override its constructor's arguments."""
    kwargs = {"bus": on_bus, "tool": "score", "arguments": {"text": "review"}, **options}

    def job() -> list[dict[str, Any]]:
        scored = ray.data.from_items(rows).map_batches(
            ToolCaller,
            fn_constructor_kwargs=kwargs,
            batch_format="pyarrow",
            batch_size=64,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=0.25,
        )
        return sorted(scored.take_all(), key=lambda row: row["id"])

    return run_job(job)


@contextmanager
def launched(config: BusConfig) -> Iterator[str]:
    asyncio.run(launch_bus(config))
    try:
        yield config.name
    finally:
        asyncio.run(stop_bus(config.name))


@pytest.fixture(scope="module")
def ray_bus(ray_session: None) -> Iterator[str]:
    """One bus on the Ray backend for the module: a scoring pool and the testkit."""
    with launched(bus_config([SCORING, KIT])) as name:
        yield name


SQS_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def kafka_bus(ray_session: None, kafka_bootstrap: str) -> Iterator[str]:
    kafka = {"bootstrap": kafka_bootstrap}
    with launched(bus_config([SCORING], backend="kafka", kafka=kafka)) as name:
        yield name


@pytest.fixture(scope="module")
def sqs_bus(ray_session: None, sqs_endpoint: str) -> Iterator[str]:
    sqs = {"endpoint_url": sqs_endpoint, **SQS_KEYS}
    with launched(bus_config([SCORING], backend="sqs", sqs=sqs)) as name:
        yield name


@pytest.fixture(
    params=[
        "ray",
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("sqs", marks=pytest.mark.sqs),
    ]
)
def any_backend_bus(request: pytest.FixtureRequest) -> str:
    bus: str = request.getfixturevalue(f"{request.param}_bus")
    return bus


def test_every_row_gets_its_result_or_its_own_error_on_every_backend(any_backend_bus: str) -> None:
    rows = [{"id": i, "review": review(i)} for i in range(ROWS)]
    scored = score(any_backend_bus, rows, actors=2)
    assert [row["id"] for row in scored] == list(range(ROWS))
    for i, row in enumerate(scored):
        assert row["review"] == review(i)  # the input columns pass through
        if review(i):
            assert row["error"] is None, row
            assert json.loads(row["result"])["score"] == expected_score(i)
        else:
            assert row["result"] is None, row
            assert row["error"]["message"], row


def test_the_call_of_the_issue_works_as_written_with_ray_datas_default_batch_format(
    ray_bus: str,
) -> None:
    # As a user writes it: `concurrency=` and the default (numpy) batches, not pyarrow.
    rows = [{"id": i, "review": review(i)} for i in range(100)]
    kwargs = {"bus": ray_bus, "tool": "score", "arguments": {"text": "review"}}

    def job() -> list[dict[str, Any]]:
        scored = ray.data.from_items(rows).map_batches(
            ToolCaller,
            fn_constructor_kwargs=kwargs,
            concurrency=2,
            batch_size=16,
            num_cpus=0.25,
        )
        return sorted(scored.take_all(), key=lambda row: row["id"])

    scored = run_job(job)
    assert [row["id"] for row in scored] == list(range(100))
    answered = [json.loads(r["result"])["score"] for r in scored if r["error"] is None]
    assert answered == [expected_score(i) for i in range(100) if review(i)]
    assert [r["result"] for r in scored if r["error"] is not None] == [None, None, None]


def test_a_function_of_the_row_builds_the_arguments(ray_bus: str) -> None:
    rows = [{"id": i, "title": "great", "body": "awful" if i % 2 else "fine"} for i in range(40)]
    scored = score(ray_bus, rows, arguments=lambda row: {"text": f"{row['title']} {row['body']}"})
    assert [json.loads(r["result"])["score"] for r in scored] == [1.0, 0.0] * 20


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bus": "no-such-bus"}, "bus 'no-such-bus' is not running on this Ray cluster"),
        ({"tool": "scroe"}, "offers no tool 'scroe'; its tools are ['ask', "),
        ({"arguments": {"txt": "review"}}, "tool 'score' requires the argument(s) 'text'"),
    ],
)
def test_a_job_that_cannot_start_fails_at_once_naming_what_is_wrong(
    ray_bus: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(RayError, match=re.escape(message)):
        score(ray_bus, [{"id": i, "review": "good"} for i in range(10)], **options)


def test_a_missing_column_fails_the_first_batch_before_any_row_is_called(
    ray_bus: str, tmp_path: Path
) -> None:
    marker = tmp_path / "calls.txt"
    rows = [{"id": i, "path": str(marker), "token": str(i)} for i in range(10)]
    arguments = {"path": "path", "token": "tokn"}
    with pytest.raises(RayError, match=re.escape("the dataset has no column(s) 'tokn'")):
        score(ray_bus, rows, tool="record", arguments=arguments)
    assert not marker.exists()  # no call reached the tool


def test_calls_pushed_back_by_a_full_pool_are_retried_until_they_are_answered(
    ray_session: None,
) -> None:
    # One call at a time on one worker, one more may wait: most of 16 calls are refused.
    narrow = {**SCORING, "max_concurrency": 1}
    config = bus_config([narrow], router={"max_pending_per_pool": 1})
    rows = [{"id": i, "review": "great"} for i in range(64)]
    with launched(config) as bus:
        without_retries = score(bus, rows, max_concurrency=16, retry={"max_attempts": 1})
        with_retries = score(
            bus, rows, max_concurrency=16, retry={"max_attempts": 30, "max_backoff_s": 0.5}
        )
    refused = [r for r in without_retries if r["error"] is not None]
    assert refused, "the pool never pushed back: the test proves nothing"
    assert {r["error"]["code"] for r in refused} == {BusErrorCode.OVERLOADED}
    assert [r["error"] for r in with_retries] == [None] * len(rows)


async def test_calls_refused_by_an_open_breaker_are_waited_out_and_run_once_each(
    ray_session: None,
) -> None:
    # The breaker opens on slow answers and stays open long enough for the checks below
    # on a loaded machine; then it lets a probe through and closes.
    breaker = slow_call_breaker(open_cooldown_s=15.0, window_s=30)
    # A worker evicted for late heartbeats (seen once at load 40) is not this test's matter.
    patient_discovery = {"heartbeat_interval_s": 0.5, "ttl_s": 30}
    config = bus_config(
        [{**KIT, "min_workers": 1}], router={"breaker": breaker}, discovery=patient_discovery
    )
    table = pa.table({"id": list(range(20)), "text": [f"t{i}" for i in range(20)]})

    async def breaker_state(client: BusClient) -> str:
        state: str = (await bus_status(client.bus))["pools"]["kit"]["breaker"]
        return state

    async def echo_calls(client: BusClient) -> int:
        about = (await client.call_tool("whoami")).structured_content
        assert about is not None
        return int(about["echo_calls"])

    async with running_bus(config) as client:
        # ToolCaller as Ray Data drives it: built, then called with a batch (in a thread).
        impatient, patient = [
            await asyncio.to_thread(ToolCaller, config.name, "echo", {"text": "text"}, retry=retry)
            for retry in ({"max_attempts": 1}, {"max_attempts": 100, "max_backoff_s": 1.0})
        ]
        try:
            before = await echo_calls(client)
            # Slow answers until the breaker opens (how many depends on what else the pool
            # answered in its window; the call that finds it open is refused).
            async with asyncio.timeout(120):
                while await breaker_state(client) != "open":
                    with contextlib.suppress(CallError):
                        await client.call_tool("nap", {"seconds": 0.3})
            refused = await asyncio.to_thread(impatient, table)
            codes = {error["code"] for error in refused.column("error").to_pylist()}
            assert codes == {BusErrorCode.CIRCUIT_OPEN}  # the breaker was open for this batch
            assert await breaker_state(client) == "open"
            answered = await asyncio.to_thread(patient, table)
            assert answered.column("error").to_pylist() == [None] * 20
            results = [json.loads(r) for r in answered.column("result").to_pylist()]
            assert results == [{"result": f"t{i}"} for i in range(20)]
            assert await echo_calls(client) == before + 20  # no refused call ever ran
        finally:
            for caller in (impatient, patient):
                await asyncio.to_thread(caller.close)


@pytest.mark.sqs
async def test_each_actor_deletes_its_response_queue_when_the_job_ends(
    sqs_bus: str, sqs_endpoint: str
) -> None:
    session = aioboto3.Session(region_name="us-east-1", **SQS_KEYS)
    async with session.client("sqs", endpoint_url=sqs_endpoint) as sqs:

        async def queues() -> set[str]:
            listed = await sqs.list_queues(QueueNamePrefix=f"{sqs_bus}-")
            return set(listed.get("QueueUrls", []))

        before = await queues()
        rows = [{"id": i, "review": "good"} for i in range(20)]
        scored = await asyncio.to_thread(score, sqs_bus, rows)
        assert [r["error"] for r in scored] == [None] * 20
        # Ray Data ends its actors after the job; each closes its client on the way out.
        # Only the queues the job added are awaited: the bus is the module's, and when
        # the SQS tests run back to back (as in a 2-worker run) the previous test's last
        # actor may still be closing as `before` is read, its queues in it, deleted later.
        added = await queues() - before
        try:
            async with asyncio.timeout(60):
                while added:
                    await asyncio.sleep(0.2)  # broker state: nothing to wait on
                    added = await queues() - before
        except TimeoutError:
            pytest.fail(f"60 s after the job its actors' queues remain: {sorted(added)}")
