"""Direct calls (a client -> a worker, the answer as the return): the worker's book of
them and the router's accounting of what workers report."""

from __future__ import annotations

import asyncio

import pytest

from actors.router.breaker import BreakerConfig, BreakerState
from actors.router.completion import DirectReport
from actors.router.core import Completion
from actors.worker import direct
from actors.worker.direct import DirectCalls
from tests.actors.test_router import call
from tests.actors.test_router_metrics import key, measured_router
from transports.errors import INTERNAL_ERROR
from transports.frame import Frame
from transports.message import Response


def answer(frame: Frame) -> Frame:
    return Frame.of(frame.envelope, Response.success(1, {"content": []}))


async def test_quick_calls_ride_on_one_return_and_a_slow_one_is_collected_later() -> None:
    book = DirectCalls()
    quick, other, slow = call("a", 1), call("a", 2), call("a", 3)
    accepted, refused = book.begin([quick, other, slow])
    keys = [key(f) for f in accepted]
    assert refused == []
    assert book.in_flight == 3
    assert book.ever

    async def serve() -> None:
        book.ended(Completion(key(quick), False, 0.01), answer(quick))
        book.ended(Completion(key(other), False, 0.01), answer(other))

    asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(serve()))
    first = await book.collect(keys)
    assert [f.envelope.correlation_key for f in first.answers] == [key(quick), key(other)]
    assert first.running == [key(slow)]  # a slow call does not hold quick ones back
    asyncio.get_running_loop().call_later(
        0.01, book.ended, Completion(key(slow), False, 0.5), answer(slow)
    )
    later = await book.collect(first.running)
    assert [f.envelope.correlation_key for f in later.answers] == [key(slow)]
    assert later.running == []
    assert book.in_flight == 0


async def test_a_call_that_spoke_is_answered_the_ordinary_way_not_in_the_return() -> None:
    book = DirectCalls()
    talky = call("a", 1)
    [talky_frame], _ = book.begin([talky])
    talky_key = key(talky_frame)
    assert book.takes_answer(talky_key)
    book.spoke(talky_key)  # it sent progress first: its answer must not overtake that
    assert not book.takes_answer(talky_key)
    book.ended(Completion(talky_key, False, 0.01), None)  # delivered after the progress
    outcome = await book.collect([talky_key])
    assert outcome.answers == []
    assert outcome.running == []


async def test_the_report_names_each_ended_call_by_its_label_and_counts_those_running() -> None:
    book = DirectCalls()
    done, running = call("a", 1), call("a", 2, "lookup")
    book.begin([done, running])
    book.ended(Completion(key(done), False, 0.02), answer(done))
    report = book.take_report("kit", 0)
    assert (report.pool, report.in_flight) == ("kit", 1)
    assert [(label, c.key) for label, c in report.ended] == [("echo", key(done))]
    assert book.take_report("kit", 0).ended == []  # each end is reported once


def test_the_router_counts_direct_calls_as_its_own() -> None:
    core, ports, metrics, _ = measured_router(("w1", 2), ("w2", 2))
    report = DirectReport("kit", 2, [])
    assert core.direct_ended("w1", report) is BreakerState.CLOSED
    lag = core.lag()["kit"]
    assert lag.in_flight == 2  # the autoscaler sees calls it never routed
    # w1 is full with direct calls: the router sends its own calls to w2.
    core.submit([call("a", 1)])
    assert [worker for worker, _ in ports.delivered] == ["w2"]
    ended = [("echo", Completion(("b", "1", "anonymous"), False, 0.05))]
    core.direct_ended("w1", DirectReport("kit", 0, ended))
    assert core.lag()["kit"].in_flight == 1
    assert core.lag()["kit"].completed == 1
    assert metrics.tallies[-1].outcomes == {("kit", "echo", "ok"): 1}


def test_direct_faults_open_the_pools_breaker_and_the_worker_is_told() -> None:
    breaker = BreakerConfig(minimum_calls=4, failure_rate_threshold=0.5)
    core, _, _, _ = measured_router(("w1", 8), breaker=breaker)
    faults = [
        ("echo", Completion(("b", str(i), "anonymous"), True, 0.01, error_code=INTERNAL_ERROR))
        for i in range(4)
    ]
    assert core.direct_ended("w1", DirectReport("kit", 0, faults)) is BreakerState.OPEN


def test_a_report_for_a_pool_the_router_does_not_know_is_ignored() -> None:
    core, _, metrics, _ = measured_router(("w1", 2))
    ended = [("echo", Completion(("b", "1", "anonymous"), False, 0.05))]
    assert core.direct_ended("w9", DirectReport("other", 0, ended)) is BreakerState.CLOSED
    assert metrics.tallies == []


async def test_answers_nobody_collects_are_let_go_past_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(direct, "_MAX_UNCOLLECTED", 2)
    book = DirectCalls()
    frames = [call("gone", n) for n in range(5)]
    book.begin(frames)
    for frame in frames:  # a client that closed: nobody collects these
        book.ended(Completion(key(frame), False, 0.01), answer(frame))
    running = call("a", 99)
    book.begin([running])
    running_key = key(running)
    # The two newest uncollected answers stay; the running call keeps its place.
    kept = await book.collect([key(f) for f in frames])
    assert [f.envelope.request_id for f in kept.answers] == ["3", "4"]
    assert book.in_flight == 1
    assert book.owns(running_key)


async def test_a_request_id_already_in_flight_is_refused_and_the_first_call_untouched() -> None:
    book = DirectCalls()
    first = call("a", 1)
    book.begin([first])
    accepted, [refusal] = book.begin([call("a", 1)])
    assert accepted == []
    message = refusal.decode()
    assert isinstance(message, Response)
    assert message.error is not None
    assert "already in flight" in message.error.message
    book.ended(Completion(key(first), False, 0.01), answer(first))
    outcome = await book.collect([key(first)])
    assert [f.envelope.correlation_key for f in outcome.answers] == [key(first)]
