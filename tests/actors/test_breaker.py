from hypothesis import given
from hypothesis import strategies as st

from actors.router.breaker import BreakerConfig, BreakerState, CircuitBreaker
from tests.actors.fakes import FakeClock

CONFIG = BreakerConfig(
    window_s=10,
    minimum_calls=4,
    failure_rate_threshold=0.5,
    slow_call_threshold_s=2,
    slow_call_rate_threshold=0.75,
    open_cooldown_s=5,
    half_open_max_calls=1,
    probe_timeout_s=3,
)


def breaker() -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker("pool", CONFIG, clock), clock


def state(b: CircuitBreaker) -> BreakerState:
    return b.state  # a call, so the type checker does not narrow across steps


def fail_calls(
    b: CircuitBreaker, count: int, *, failed: bool = True, duration_s: float = 0.1
) -> None:
    for i in range(count):
        assert b.try_acquire(i)
        b.record(i, failed=failed, duration_s=duration_s)


def test_it_stays_closed_below_the_minimum_number_of_calls() -> None:
    b, _ = breaker()
    fail_calls(b, 3)
    assert state(b) is BreakerState.CLOSED


def test_it_opens_when_the_failure_rate_crosses_the_threshold_and_then_fails_fast() -> None:
    b, _ = breaker()
    fail_calls(b, 2, failed=False)
    fail_calls(b, 2)
    assert state(b) is BreakerState.OPEN
    assert not b.try_acquire("next")


def test_slow_calls_open_it_too() -> None:
    b, _ = breaker()
    fail_calls(b, 4, failed=False, duration_s=5)
    assert state(b) is BreakerState.OPEN


def test_old_outcomes_leave_the_window() -> None:
    b, clock = breaker()
    fail_calls(b, 3)
    clock.advance(11)
    fail_calls(b, 1)
    fail_calls(b, 3, failed=False)
    assert state(b) is BreakerState.CLOSED


def test_after_the_cooldown_one_probe_goes_through_and_success_closes_it() -> None:
    b, clock = breaker()
    fail_calls(b, 4)
    clock.advance(5)
    assert state(b) is BreakerState.HALF_OPEN
    assert b.try_acquire("probe")
    assert not b.try_acquire("another")
    b.record("probe", failed=False, duration_s=0.1)
    assert state(b) is BreakerState.CLOSED
    assert b.try_acquire("another")


def test_a_failed_probe_opens_it_again() -> None:
    b, clock = breaker()
    fail_calls(b, 4)
    clock.advance(5)
    assert b.try_acquire("probe")
    b.record("probe", failed=True, duration_s=0.1)
    assert state(b) is BreakerState.OPEN


def test_a_probe_that_hangs_times_out_and_reopens_it() -> None:
    b, clock = breaker()
    fail_calls(b, 4)
    clock.advance(5)
    assert b.try_acquire("probe")
    clock.advance(3)
    assert state(b) is BreakerState.OPEN
    clock.advance(5)
    assert state(b) is BreakerState.HALF_OPEN
    assert b.try_acquire("second probe")


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 5), st.floats(0, 4)), max_size=60))
def test_the_state_machine_never_admits_calls_while_open(
    steps: list[tuple[bool, float, float]],
) -> None:
    b, clock = breaker()
    for n, (failed, duration, gap) in enumerate(steps):
        clock.advance(gap)
        before = state(b)
        admitted = b.try_acquire(n)
        if before is BreakerState.OPEN:
            assert not admitted
        if admitted:
            b.record(n, failed=failed, duration_s=duration)
        assert state(b) in set(BreakerState)
