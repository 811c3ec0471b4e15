"""`BusClient.stream_tool_calls` through a real bus: outcomes as they complete, bounded.

One bus serves the module. The orderings below are caused, not raced: the call held
back is a sampling request the test answers only after the others have come back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from cluster.bus import bus_status
from cluster.client import BusClient, CallError, IndexedOutcome
from tests.cluster.bus_helpers import bus_config, running_bus
from tests.resident_memory import resident_mib
from tests.waiting import wait_until
from transports.message import Request

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bus(ray_session: None) -> AsyncIterator[BusClient]:
    config = bus_config([{"name": "kit", "server": "cluster.examples.testkit:server"}])
    async with running_bus(config) as client:
        yield client


def _text(outcome: IndexedOutcome) -> str:
    assert outcome.error is None, outcome.error
    assert not isinstance(outcome.outcome, Exception)
    content = outcome.outcome.structured_content
    assert content is not None
    return str(content["result"])


async def _in_flight(bus: BusClient, count: int) -> None:
    async with asyncio.timeout(60):
        while True:
            if (await bus_status(bus.bus))["pools"]["kit"]["in_flight"] == count:
                return
            await asyncio.sleep(0.05)  # polling router state from outside


async def test_outcomes_arrive_as_they_complete_each_with_its_input_index(bus: BusClient) -> None:
    session = bus.new_session()
    total = 40
    released = asyncio.Event()

    async def answer_when_released(request: Request) -> dict[str, Any]:
        await released.wait()
        return {"role": "assistant", "content": {"type": "text", "text": "held"}, "model": "t"}

    session.server_request_handler = answer_when_released
    calls = [("ask", {"question": "wait"})] + [
        ("echo", {"text": f"call {i}"}) for i in range(1, total)
    ]
    seen: list[IndexedOutcome] = []
    async with asyncio.timeout(120):
        async for outcome in session.stream_tool_calls(calls, concurrency=8):
            seen.append(outcome)
            if len(seen) == total - 1:
                released.set()  # only now may the first call end
    assert [o.index for o in seen][-1] == 0
    assert _text(seen[-1]) == "held"
    assert sorted(o.index for o in seen) == list(range(total))
    assert all(_text(o) == f"call {o.index}" for o in seen[:-1])


async def test_a_failed_call_yields_its_error_in_place_and_the_stream_goes_on(
    bus: BusClient,
) -> None:
    calls: list[tuple[str, dict[str, Any] | None]] = [
        ("echo", {"text": "first"}),
        ("no_such_tool", {}),
        ("fail", {"reason": "on purpose"}),
        ("echo", None),
        ("echo", {"text": "last"}),
    ]
    outcomes = {o.index: o for o in [o async for o in bus.stream_tool_calls(calls)]}
    assert _text(outcomes[0]) == "first"
    assert isinstance(outcomes[1].error, CallError)
    assert "no_such_tool" in outcomes[1].error.message
    failed = outcomes[2].outcome
    assert not isinstance(failed, Exception)
    assert failed.is_error  # the tool's own failure is a result, as with call_tool
    no_arguments = outcomes[3].outcome
    assert not isinstance(no_arguments, Exception)
    assert no_arguments.is_error
    assert _text(outcomes[4]) == "last"

    in_order = await bus.map_tool_calls(calls)
    assert [type(r).__name__ for r in in_order] == [
        type(outcomes[i].outcome).__name__ for i in range(len(calls))
    ]


async def test_stopping_early_cancels_the_calls_in_flight_on_the_bus(
    bus: BusClient, tmp_path: Path
) -> None:
    pulled = 0

    def calls() -> Iterator[tuple[str, dict[str, Any]]]:
        nonlocal pulled
        pulled += 1
        yield ("echo", {"text": "quick"})
        for i in range(1, 100):
            pulled += 1
            yield ("nap", {"seconds": 600, "marker": str(tmp_path / f"cancelled-{i}")})

    async with aclosing(bus.stream_tool_calls(calls(), concurrency=4)) as outcomes:
        async for outcome in outcomes:
            assert outcome.index == 0
            await _in_flight(bus, 3)  # the three naps run on the worker
            break
    assert pulled == 4
    for i in (1, 2, 3):
        await wait_until((tmp_path / f"cancelled-{i}").exists)
    await _in_flight(bus, 0)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("raybus-fanout")]


async def test_an_async_iterable_is_streamed_too(bus: BusClient) -> None:
    async def calls() -> AsyncIterator[tuple[str, dict[str, Any]]]:
        for i in range(100):
            await asyncio.sleep(0)
            yield ("echo", {"text": str(i)})

    texts = {o.index: _text(o) async for o in bus.stream_tool_calls(calls(), concurrency=16)}
    assert texts == {i: str(i) for i in range(100)}


async def test_never_more_than_concurrency_calls_and_outcomes_are_held(bus: BusClient) -> None:
    pulled = 0

    def calls() -> Iterator[tuple[str, dict[str, Any]]]:
        nonlocal pulled
        for i in range(600):
            pulled += 1
            yield ("echo", {"text": str(i)})

    received = 0
    held: list[int] = []
    async for _ in bus.stream_tool_calls(calls(), concurrency=24):
        received += 1
        held.append(pulled - (received - 1))  # pulled and not yet received, this one included
    assert received == 600
    assert max(held) == 24


async def test_bad_input_is_refused_with_its_reason(bus: BusClient) -> None:
    with pytest.raises(ValueError, match="concurrency must be an integer >= 1, got 0"):
        bus.stream_tool_calls([("echo", {"text": "x"})], concurrency=0)
    with pytest.raises(ValueError, match="concurrency must be an integer >= 1"):
        await bus.map_tool_calls([("echo", {"text": "x"})], concurrency=0)
    with pytest.raises(TypeError, match=r"call 1: expected a \(tool name, arguments dict\)"):
        async for _ in bus.stream_tool_calls([("echo", {"text": "x"}), ("echo",)]):  # type: ignore[list-item]
            pass


@pytest.mark.slow
async def test_resident_memory_stays_flat_while_calls_stream_through(bus: BusClient) -> None:
    total, sample_every = 8_000, 1_000
    text = "x" * 2048  # each result holds it twice: kept, 8,000 results are > 32 MiB

    samples: list[float] = []
    errors = 0
    async for outcome in bus.stream_tool_calls(
        (("echo", {"text": text}) for _ in range(total)), concurrency=64, timeout_s=300
    ):
        errors += outcome.error is not None
        if (outcome.index + 1) % sample_every == 0 and outcome.index >= sample_every:
            samples.append(resident_mib())  # after a warm-up of 1,000 calls
    assert errors == 0
    assert len(samples) >= 5
    assert max(samples) - samples[0] < 16, f"resident MiB every {sample_every}: {samples}"
