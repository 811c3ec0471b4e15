"""The coalescer: requests made while a batch is out share the next call, each gets its
own result (or the batch's error), and a lone request leaves at once."""

from __future__ import annotations

import asyncio

import pytest

from actors.coalesce import Coalescer

BOUND_S = 5.0


class HeldCalls:
    """``call_many`` that records each batch and answers only when released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.sent = asyncio.Event()  # a batch is out
        self.failure: Exception | None = None

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        self.sent.set()
        await self.release.wait()
        if self.failure is not None:
            raise self.failure
        return [item * 10 for item in items]


async def test_a_lone_request_leaves_at_once_and_gets_its_own_result() -> None:
    calls = HeldCalls()
    calls.release.set()
    async with asyncio.timeout(BOUND_S):
        assert await Coalescer(calls)(7) == 70
    assert calls.batches == [[7]]


async def test_requests_made_while_a_batch_is_out_leave_together_in_order() -> None:
    calls = HeldCalls()
    coalescer = Coalescer(calls)
    async with asyncio.timeout(BOUND_S):
        first = asyncio.ensure_future(coalescer(1))
        await calls.sent.wait()  # the first batch is out (and held)
        rest = [asyncio.ensure_future(coalescer(n)) for n in (2, 3, 4)]
        await asyncio.sleep(0)
        assert calls.batches == [[1]]  # held: the others wait for it
        calls.release.set()
        assert await asyncio.gather(first, *rest) == [10, 20, 30, 40]
    assert calls.batches == [[1], [2, 3, 4]]  # two calls for four requests


async def test_a_failed_batch_fails_each_of_its_requests_and_the_next_batch_still_goes() -> None:
    calls = HeldCalls()
    coalescer = Coalescer(calls)
    calls.failure = ConnectionError("the ledger actor died")
    calls.release.set()
    async with asyncio.timeout(BOUND_S):
        outcomes = await asyncio.gather(coalescer(1), coalescer(2), return_exceptions=True)
        assert all(isinstance(outcome, ConnectionError) for outcome in outcomes)
        calls.failure = None
        assert await coalescer(3) == 30


async def test_a_short_answer_is_an_error_for_every_request_not_a_crossed_result() -> None:
    async def one_short(items: list[int]) -> list[int]:
        return items[:-1]

    coalescer = Coalescer(one_short)
    async with asyncio.timeout(BOUND_S):
        outcomes = await asyncio.gather(coalescer(1), coalescer(2), return_exceptions=True)
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)


async def test_a_request_whose_asker_gave_up_does_not_disturb_the_others() -> None:
    calls = HeldCalls()
    coalescer = Coalescer(calls)
    async with asyncio.timeout(BOUND_S):
        gave_up = asyncio.ensure_future(coalescer(1))
        kept = asyncio.ensure_future(coalescer(2))
        await calls.sent.wait()
        gave_up.cancel()
        calls.release.set()
        assert await kept == 20
        with pytest.raises(asyncio.CancelledError):
            await gave_up
