"""A broker client's own breakers: the router's rules, fed by the answers it receives."""

from __future__ import annotations

from dataclasses import replace

from actors.broker_calls import BrokerCalls
from actors.router.breaker import BreakerConfig, BreakerState
from tests.actors.fakes import FakeClock
from transports.envelope import Envelope
from transports.errors import INTERNAL_ERROR, BusErrorCode
from transports.frame import Frame
from transports.message import Request, Response

BREAKER = BreakerConfig(
    minimum_calls=3, failure_rate_threshold=0.6, open_cooldown_s=5.0, slow_call_threshold_s=2.0
)


def call(number: int, *, deadline_unix_s: float | None = None) -> Frame:
    envelope = Envelope(client_id="c", request_id=str(number), deadline_unix_s=deadline_unix_s)
    return Frame.of(envelope, Request(id=number, method="tools/call", params={"name": "t"}))


def failure(number: int, code: int) -> Response:
    return Response.failure(number, code, "no")


def calls(clock: FakeClock | None = None, wall: FakeClock | None = None) -> BrokerCalls:
    return BrokerCalls(BREAKER, clock or FakeClock(), wall or FakeClock(1_000_000.0))


def test_pool_faults_open_the_pools_breaker_and_later_calls_fail_fast_with_1003() -> None:
    tracked = calls()
    for n in range(3):
        assert tracked.admit(call(n), "p") is None
        tracked.answered(call(n).envelope.correlation_key, failure(n, INTERNAL_ERROR))
    assert tracked.breaker_states() == {"p": BreakerState.OPEN}
    refused = tracked.admit(call(9), "p")
    assert refused is not None
    answer = refused.decode()
    assert isinstance(answer, Response)
    assert answer.error is not None
    assert answer.error.code == BusErrorCode.CIRCUIT_OPEN
    assert answer.id == 9
    assert refused.envelope.correlation_key == call(9).envelope.correlation_key
    # Another pool is judged on its own calls.
    assert tracked.admit(call(10), "q") is None


def test_cancelled_and_expired_calls_are_no_verdict_on_the_pool() -> None:
    tracked = calls()
    for n in range(6):
        assert tracked.admit(call(n), "p") is None
    for n in range(3):
        expired = failure(n, BusErrorCode.DEADLINE_EXCEEDED)
        tracked.answered(call(n).envelope.correlation_key, expired)
    for n in range(3, 6):
        assert tracked.withdraw(call(n).envelope.correlation_key) == "p"
    assert tracked.breaker_states() == {"p": BreakerState.CLOSED}
    assert tracked.in_flight() == []


def test_tool_errors_are_the_tools_business_and_slow_answers_count_as_slow() -> None:
    clock = FakeClock()
    tracked = BrokerCalls(
        BreakerConfig(minimum_calls=3, slow_call_threshold_s=2.0, slow_call_rate_threshold=0.5),
        clock,
    )
    for n in range(3):
        tracked.admit(call(n), "p")
        tracked.answered(
            call(n).envelope.correlation_key,
            Response.success(n, {"content": [], "isError": True}),
        )
    assert tracked.breaker_states() == {"p": BreakerState.CLOSED}
    for n in range(3, 6):
        tracked.admit(call(n), "p")
    clock.advance(2.5)  # the broker and the server together took longer than allowed
    for n in range(3, 6):
        tracked.answered(call(n).envelope.correlation_key, Response.success(n, {"content": []}))
    assert tracked.breaker_states() == {"p": BreakerState.OPEN}


def test_after_the_cooldown_one_probe_goes_and_its_success_closes_the_breaker() -> None:
    clock = FakeClock()
    tracked = calls(clock)
    for n in range(3):
        tracked.admit(call(n), "p")
        tracked.answered(call(n).envelope.correlation_key, failure(n, INTERNAL_ERROR))
    clock.advance(5.0)
    assert tracked.admit(call(20), "p") is None  # the probe
    assert tracked.admit(call(21), "p") is not None  # only one at a time
    tracked.answered(call(20).envelope.correlation_key, Response.success(20, {"content": []}))
    assert tracked.breaker_states() == {"p": BreakerState.CLOSED}


def test_unanswered_calls_are_forgotten_once_long_past_their_deadline() -> None:
    wall = FakeClock(1_000_000.0)
    tracked = calls(wall=wall)
    for n in range(2000):
        tracked.admit(call(n, deadline_unix_s=wall.now + 1), "p")
    wall.advance(60)
    for n in range(2000, 2100):
        tracked.admit(call(n, deadline_unix_s=wall.now + 1), "p")
    assert len(tracked.in_flight()) == 100
    # A late answer to a forgotten call is dropped, not counted twice.
    tracked.answered(call(5).envelope.correlation_key, failure(5, INTERNAL_ERROR))
    assert tracked.breaker_states() == {"p": BreakerState.CLOSED}


def test_a_closing_client_cancels_only_its_calls_without_an_idempotency_key() -> None:
    tracker = calls()
    plain = call(1)
    keyed = Frame.of(replace(call(2).envelope, idempotency_key="order-2"), call(2).decode())
    assert tracker.admit(plain, "kit") is None
    assert tracker.admit(keyed, "kit") is None
    assert tracker.in_flight() == [plain.envelope.correlation_key]
