"""The fan-out engine on its own (no Ray): lazy pulls, a bound, early close, errors;
and ``BusClient.stream_tool_calls`` on it, over requests answered in this process.

The calls here are plain coroutines that wait on events the test controls, so every
ordering below is caused, not raced.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import pytest

from cluster.client import BusClient, MessageHandler, ProgressCallback
from cluster.fanout import stream_bounded
from tests.resident_memory import resident_mib
from tests.waiting import wait_until


class Gates:
    """One event per item: a call ends when the test opens its gate."""

    def __init__(self, count: int) -> None:
        self.events = [asyncio.Event() for _ in range(count)]
        self.running = 0
        self.most_running = 0
        self.cancelled: list[int] = []

    async def run(self, index: int, item: int) -> tuple[int, int]:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.events[item].wait()
        except asyncio.CancelledError:
            self.cancelled.append(index)
            raise
        finally:
            self.running -= 1
        return index, item * 10


async def test_outcomes_come_in_completion_order_with_their_input_index() -> None:
    gates = Gates(5)
    stream = stream_bounded(range(5), gates.run, concurrency=5)
    seen = []
    for item in (3, 0, 4, 1, 2):
        gates.events[item].set()
        seen.append(await anext(stream))
    assert seen == [(3, 30), (0, 0), (4, 40), (1, 10), (2, 20)]
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_input_is_pulled_lazily_and_never_more_than_concurrency_is_held() -> None:
    pulled = 0

    def calls() -> Iterator[int]:
        nonlocal pulled
        for item in range(100):
            pulled += 1
            yield item

    async def run(index: int, item: int) -> int:
        await asyncio.sleep(0)
        return item

    received = 0
    held_at_yield = []
    async for _ in stream_bounded(calls(), run, concurrency=7):
        received += 1
        held_at_yield.append(pulled - (received - 1))  # this one included
    assert received == 100
    assert max(held_at_yield) == 7  # the bound is used...
    assert all(held <= 7 for held in held_at_yield)  # ...and never passed


async def test_a_slow_consumer_holds_back_the_input() -> None:
    gates = Gates(50)
    pulled: list[int] = []

    def calls() -> Iterator[int]:
        for item in range(50):
            pulled.append(item)
            yield item

    for event in gates.events:
        event.set()  # every call ends at once; only the consumer is slow
    stream = stream_bounded(calls(), gates.run, concurrency=4)
    await anext(stream)
    for _ in range(20):
        await asyncio.sleep(0)  # the loop turns; nothing may be pulled meanwhile
    assert len(pulled) == 4
    await stream.aclose()


async def test_closing_early_cancels_every_call_in_flight() -> None:
    gates = Gates(10)
    gates.events[2].set()
    async with aclosing(stream_bounded(range(10), gates.run, concurrency=4)) as stream:
        async for outcome in stream:
            assert outcome == (2, 20)
            break
    assert sorted(gates.cancelled) == [0, 1, 3]  # 4 was never pulled: no refill before
    assert gates.running == 0
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("raybus-fanout")]


async def test_cancelling_the_consumer_cancels_the_calls_in_flight() -> None:
    gates = Gates(3)

    async def consume() -> None:
        async for _ in stream_bounded(range(3), gates.run, concurrency=3):
            pass

    consumer = asyncio.create_task(consume())
    await wait_until(lambda: gates.running == 3)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert sorted(gates.cancelled) == [0, 1, 2]


async def test_an_async_input_fed_by_the_outcomes_never_deadlocks() -> None:
    """A work queue: each outcome may add work; the input waits for the consumer."""
    work: asyncio.Queue[int | None] = asyncio.Queue()
    work.put_nowait(1)

    async def calls() -> AsyncIterator[int]:
        while (item := await work.get()) is not None:
            yield item

    async def run(index: int, item: int) -> int:
        await asyncio.sleep(0)
        return item

    done = []
    async with asyncio.timeout(30):
        async for item in stream_bounded(calls(), run, concurrency=8):
            done.append(item)
            if item < 64:
                work.put_nowait(item * 2)
                work.put_nowait(item * 2 + 1)
            if len(done) == 127:
                work.put_nowait(None)
    assert sorted(done) == list(range(1, 128))


async def test_an_input_that_fails_ends_the_stream_after_cancelling_the_calls() -> None:
    gates = Gates(3)

    async def calls() -> AsyncIterator[int]:
        yield 0
        yield 1
        await wait_until(lambda: gates.running == 2)
        raise LookupError("the input broke")

    with pytest.raises(LookupError, match="the input broke"):
        async for _ in stream_bounded(calls(), gates.run, concurrency=4):
            pass
    assert sorted(gates.cancelled) == [0, 1]
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("raybus-fanout")]


@pytest.mark.parametrize("concurrency", [0, -1, 1.5, True])
def test_a_bad_concurrency_is_refused_at_the_call(concurrency: int) -> None:
    class Untouchable:
        def __iter__(self) -> Iterator[int]:
            return self

        def __next__(self) -> int:
            raise AssertionError("pulled")

    async def run(index: int, item: int) -> int:
        return item

    with pytest.raises(ValueError, match=f"concurrency must be an integer >= 1, got {concurrency}"):
        stream_bounded(Untouchable(), run, concurrency=concurrency)


async def test_memory_stays_flat_while_200k_calls_stream_through() -> None:
    total, payload = 200_000, 2048

    async def run(index: int, item: int) -> bytes:
        await asyncio.sleep(0)
        return bytes(payload)  # kept, these would be 400 MB

    samples: list[float] = []
    received = 0
    async for outcome in stream_bounded(range(total), run, concurrency=64):
        assert len(outcome) == payload
        received += 1
        if received % 40_000 == 0:  # the first sample, after warm-up, is the baseline
            samples.append(resident_mib())
    assert received == total
    assert max(samples) - samples[0] < 16, f"resident MiB at each 40k: {samples}"


class AnsweredInProcess(BusClient):
    """A ``BusClient`` whose every request is answered at once, here: no bus, no Ray.

    What stays is the client's own side of a stream (each call's checks, ``call_tool``
    reading the result, the indexed outcome), so its memory can be watched over 200,000
    calls in seconds; ``tests/cluster/test_client_stream.py`` watches it with a real bus.
    """

    def __init__(self) -> None:  # no connection: nothing leaves this process
        pass

    async def request(
        self,
        method: str,
        params: dict[str, Any],
        *,
        name: str | None,
        timeout_s: float = 60.0,
        progress: ProgressCallback | None = None,
        on_message: MessageHandler | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
        labels: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        await asyncio.sleep(0)
        text = params["arguments"]["text"]
        return {"content": [{"type": "text", "text": text}], "structuredContent": {"result": text}}


async def test_stream_tool_calls_holds_memory_flat_while_200k_calls_stream_through() -> None:
    total, payload = 200_000, "x" * 1024

    samples: list[float] = []
    received = 0
    stream = AnsweredInProcess().stream_tool_calls(
        (("echo", {"text": payload}) for _ in range(total)), concurrency=64
    )
    async for outcome in stream:
        assert outcome.error is None
        received += 1
        if received % 40_000 == 0:  # the first sample, after warm-up, is the baseline
            samples.append(resident_mib())
    assert received == total
    # Kept, 200,000 results (each with its text twice, and the models around them) are
    # far past a gigabyte.
    assert max(samples) - samples[0] < 16, f"resident MiB at each 40k: {samples}"
