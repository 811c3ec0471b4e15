"""The shared fault checker counts exactly what it claims (a fake clock, no bus)."""

from __future__ import annotations

import asyncio

from tests.faults.history import History, check
from transports.errors import CallError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_clean_history_is_clean_and_counts_errors_by_code() -> None:
    clock = Clock()
    history = History(clock)
    first, second = history.invoke(0, 10), history.invoke(1, 10)
    clock.now = 1
    history.record(first, "ok", first.key)
    history.record(second, "error", 1004)
    verdict = check(history)
    assert verdict.clean
    assert (verdict.total, verdict.ok, dict(verdict.errors)) == (2, 1, {1004: 1})


def test_lost_crossed_hung_and_duplicated_are_each_named() -> None:
    clock = Clock()
    history = History(clock)
    lost, crossed, hung, twice, ran_twice = (history.invoke(i, 10) for i in range(5))
    history.record(crossed, "ok", hung.key)  # another request's answer
    clock.now = 16  # past the 10 s deadline and the 5 s grace
    history.record(hung, "ok", hung.key)
    history.record(twice, "ok", twice.key)
    history.record(twice, "error", 1004)
    history.record(ran_twice, "ok", ran_twice.key)
    verdict = check(history, executions={ran_twice.key: 2, lost.key: 0})
    assert verdict.lost == [lost.key]
    assert verdict.crossed == [crossed.key]
    assert verdict.hung == [hung.key, twice.key, ran_twice.key]
    assert sorted(verdict.duplicated) == sorted([twice.key, ran_twice.key])
    assert not verdict.clean


async def test_call_records_results_errors_and_nothing_for_a_request_that_never_ends() -> None:
    history = History()

    async def echo(key: str) -> str:
        return key

    async def refused(key: str) -> str:
        raise CallError("tools/call", 1003, "breaker open")

    async def never(key: str) -> str:
        await asyncio.Event().wait()
        return key

    await history.call(0, echo, deadline_s=1)
    await history.call(1, refused, deadline_s=1)
    await history.call(2, never, deadline_s=0.01)  # gives up after 2 x deadline + 5 s
    verdict = check(history)
    assert (verdict.ok, dict(verdict.errors), len(verdict.lost)) == (1, {1003: 1}, 1)
