"""RetryTransport: which errors it retries, its backoff, and its budget (fake clock)."""

from __future__ import annotations

import pytest

from tests.transports.wrappers.fakes import FakeClock, RecordingSleep, ScriptedTransport
from transports.envelope import Envelope
from transports.errors import BusError, BusTimeout, ConnectionClosed, MessageTooLarge
from transports.message import Notification, TransportMessage
from transports.wrappers.retry import RetryBudget, RetryPolicy, RetryTransport

PING = Notification(method="ping")


def failing_times(count: int, error: BusError) -> ScriptedTransport:
    left = [count]

    def fail(message: TransportMessage, envelope: Envelope | None) -> BusError | None:
        if left[0] > 0:
            left[0] -= 1
            return error
        return None

    return ScriptedTransport(fail=fail)


def dead(error: BusError) -> ScriptedTransport:
    return ScriptedTransport(fail=lambda message, envelope: error)


def full_budget(clock: FakeClock | None = None) -> RetryBudget:
    budget = RetryBudget(ratio=1.0, max_tokens=100, min_per_s=0, clock=clock or FakeClock())
    for _ in range(100):
        budget.record_send()
    return budget


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=1.0, multiplier=2.0)
    assert [policy.backoff_ceiling_s(n) for n in range(1, 7)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )
    assert policy.backoff_ceiling_s(10_000) == 1.0  # no overflow far past the cap


def test_backoff_is_fully_jittered_within_the_ceiling() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=1.0)
    assert policy.backoff_s(3, lambda: 0.0) == 0.0
    assert policy.backoff_s(3, lambda: 0.5) == pytest.approx(0.2)
    assert policy.backoff_s(3, lambda: 0.999) < policy.backoff_ceiling_s(3)


async def test_a_closed_connection_is_retried_with_backoff_until_the_send_succeeds() -> None:
    inner = failing_times(2, ConnectionClosed("broker restarting"))
    sleep = RecordingSleep()
    retry = RetryTransport(
        inner,
        policy=RetryPolicy(max_attempts=4, initial_backoff_s=0.1, max_backoff_s=1.0),
        budget=full_budget(),
        sleep=sleep,
        uniform=lambda: 1.0,
    )
    await retry.send(PING)
    assert inner.sent == [(PING, None)]
    assert inner.attempts == 3
    assert sleep.requested == pytest.approx([0.1, 0.2])
    assert retry.retries == 2


async def test_attempts_are_bounded_and_the_last_error_is_raised() -> None:
    inner = dead(ConnectionClosed("gone"))
    retry = RetryTransport(
        inner, policy=RetryPolicy(max_attempts=3), budget=full_budget(), sleep=RecordingSleep()
    )
    with pytest.raises(ConnectionClosed, match="gone"):
        await retry.send(PING)
    assert inner.attempts == 3


async def test_an_error_that_cannot_succeed_again_is_not_retried() -> None:
    inner = dead(MessageTooLarge(10, 5))
    retry = RetryTransport(inner, budget=full_budget(), sleep=RecordingSleep())
    with pytest.raises(MessageTooLarge):
        await retry.send(PING)
    assert inner.attempts == 1


async def test_a_timeout_is_retried_only_where_duplicates_are_expected_anyway() -> None:
    timeout = BusTimeout("send", 1.0)
    at_most_once = dead(timeout)
    with pytest.raises(BusTimeout):
        await RetryTransport(at_most_once, budget=full_budget(), sleep=RecordingSleep()).send(PING)
    assert at_most_once.attempts == 1

    at_least_once = failing_times(1, timeout)
    at_least_once.at_least_once = True
    await RetryTransport(at_least_once, budget=full_budget(), sleep=RecordingSleep()).send(PING)
    assert at_least_once.attempts == 2

    opted_in = failing_times(1, timeout)
    retry = RetryTransport(
        opted_in, budget=full_budget(), sleep=RecordingSleep(), retry_unknown_outcome=True
    )
    await retry.send(PING)
    assert opted_in.attempts == 2


async def test_nothing_is_retried_after_close() -> None:
    inner = ScriptedTransport()
    retry = RetryTransport(inner, budget=full_budget(), sleep=RecordingSleep())
    await retry.close()
    with pytest.raises(ConnectionClosed):
        await retry.send(PING)
    assert inner.attempts == 1


async def test_a_dead_broker_sees_at_most_about_a_fifth_more_traffic() -> None:
    clock = FakeClock()  # frozen: no refill from time, only from traffic
    inner = dead(ConnectionClosed("broker down"))
    retry = RetryTransport(
        inner,
        policy=RetryPolicy(max_attempts=10),
        budget=RetryBudget(ratio=0.2, max_tokens=10, min_per_s=0.1, clock=clock),
        sleep=RecordingSleep(),
    )
    sends = 500
    for _ in range(sends):
        with pytest.raises(ConnectionClosed):
            await retry.send(PING)
    assert retry.retries == inner.attempts - sends
    assert sends * 0.2 - 1 <= retry.retries <= sends * 0.2


def test_the_budget_saves_up_no_more_than_its_cap() -> None:
    budget = RetryBudget(ratio=0.2, max_tokens=3, min_per_s=0, clock=FakeClock())
    for _ in range(1000):
        budget.record_send()
    assert budget.tokens == 3
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]


def test_the_budget_refills_slowly_with_time_for_a_quiet_sender() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, max_tokens=10, min_per_s=0.1, clock=clock)
    assert not budget.try_spend()
    clock.advance(9.0)
    assert not budget.try_spend()
    clock.advance(1.0)
    assert budget.try_spend()
    assert not budget.try_spend()


def test_bad_settings_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="ratio"):
        RetryBudget(ratio=1.5)
