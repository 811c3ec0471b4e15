"""Which failed calls a batch retries, and how long it waits: the rule, without Ray."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.data.retry import (
    RetryPolicy,
    call_with_retry,
    is_safe_to_repeat,
    retry_delay_s,
    should_retry,
)
from transports.errors import (
    INVALID_PARAMS,
    BusError,
    BusErrorCode,
    BusTimeout,
    CallError,
    ConnectionClosed,
)

POLICY = RetryPolicy(max_attempts=5, initial_backoff_s=0.1, max_backoff_s=2.0)


def refused(code: int, **data: float) -> CallError:
    return CallError("tools/call", code, "refused", data or None)


@pytest.mark.parametrize(
    "code", [BusErrorCode.OVERLOADED, BusErrorCode.CIRCUIT_OPEN, BusErrorCode.RATE_LIMITED]
)
def test_a_call_refused_before_any_worker_saw_it_is_retried_even_for_an_unsafe_tool(
    code: int,
) -> None:
    assert should_retry(refused(code), attempt=1, timeouts=0, tool_is_safe=False, policy=POLICY)


@pytest.mark.parametrize(
    "error",
    [
        refused(BusErrorCode.OUTCOME_UNKNOWN),
        refused(BusErrorCode.SHUTTING_DOWN),
        refused(BusErrorCode.UPSTREAM_FAILED),
        refused(BusErrorCode.DEADLINE_EXCEEDED),
        BusTimeout("tools/call", 1.0),
        ConnectionClosed("the bus router is unreachable"),
    ],
)
def test_a_call_that_may_have_run_is_retried_only_when_the_tool_is_safe_to_repeat(
    error: BusError,
) -> None:
    assert should_retry(error, attempt=1, timeouts=0, tool_is_safe=True, policy=POLICY)
    assert not should_retry(error, attempt=1, timeouts=0, tool_is_safe=False, policy=POLICY)


@pytest.mark.parametrize(
    "code", [INVALID_PARAMS, -32601, BusErrorCode.FORBIDDEN, BusErrorCode.CANCELLED]
)
def test_the_rows_own_answer_is_never_retried(code: int) -> None:
    assert not should_retry(refused(code), attempt=1, timeouts=0, tool_is_safe=True, policy=POLICY)


def test_retries_stop_at_max_attempts() -> None:
    error = refused(BusErrorCode.OVERLOADED)
    assert should_retry(error, attempt=4, timeouts=0, tool_is_safe=False, policy=POLICY)
    assert not should_retry(error, attempt=5, timeouts=0, tool_is_safe=False, policy=POLICY)


@pytest.mark.parametrize(
    "error",
    [refused(BusErrorCode.DEADLINE_EXCEEDED), BusTimeout("tools/call", 60.0)],
)
def test_a_safe_call_that_timed_out_is_repeated_only_once(error: BusError) -> None:
    assert should_retry(error, attempt=2, timeouts=0, tool_is_safe=True, policy=POLICY)
    assert not should_retry(error, attempt=2, timeouts=1, tool_is_safe=True, policy=POLICY)
    # A refusal after a timeout is still backpressure, and still retried.
    overloaded = refused(BusErrorCode.OVERLOADED)
    assert should_retry(overloaded, attempt=3, timeouts=1, tool_is_safe=True, policy=POLICY)


@pytest.mark.parametrize(
    ("annotations", "safe"),
    [
        ({"readOnlyHint": True}, True),
        ({"idempotentHint": True}, True),
        ({"destructiveHint": False}, False),
        ({"readOnlyHint": False, "idempotentHint": False}, False),
        (None, False),
    ],
)
def test_a_tool_is_safe_to_repeat_when_its_annotations_say_so(
    annotations: dict[str, bool] | None, safe: bool
) -> None:
    assert is_safe_to_repeat({"name": "t", "annotations": annotations}) is safe


def test_waits_grow_exponentially_up_to_the_cap() -> None:
    rng = random.Random(7)
    error = refused(BusErrorCode.OVERLOADED)
    waits = [retry_delay_s(error, attempt=a, policy=POLICY, rng=rng) for a in range(1, 8)]
    bounds = [(b / 2, b) for b in (0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0)]
    assert all(low <= w <= high for w, (low, high) in zip(waits, bounds, strict=True))


def test_a_retry_after_hint_lengthens_the_wait_but_never_past_the_cap() -> None:
    rng = random.Random(7)
    hinted = retry_delay_s(
        refused(BusErrorCode.OVERLOADED, retryAfterSeconds=1.0), attempt=1, policy=POLICY, rng=rng
    )
    assert 0.5 <= hinted <= 1.0
    huge = retry_delay_s(
        refused(BusErrorCode.CIRCUIT_OPEN, retryAfterSeconds=600), attempt=1, policy=POLICY, rng=rng
    )
    assert huge <= POLICY.max_backoff_s


@given(
    attempt=st.integers(1, 10_000),
    hint=st.one_of(st.none(), st.floats(allow_nan=True), st.booleans(), st.text(max_size=3)),
    seed=st.integers(0, 2**32),
)
def test_every_wait_is_positive_and_within_the_cap(attempt: int, hint: object, seed: int) -> None:
    error = CallError("tools/call", BusErrorCode.OVERLOADED, "full", {"retryAfterSeconds": hint})
    wait = retry_delay_s(error, attempt=attempt, policy=POLICY, rng=random.Random(seed))
    assert 0 < wait <= POLICY.max_backoff_s


def test_a_policy_whose_cap_is_below_its_first_wait_is_refused() -> None:
    with pytest.raises(ValueError, match="max_backoff_s"):
        RetryPolicy(initial_backoff_s=2.0, max_backoff_s=1.0)


class Flaky:
    """A call that fails with the given errors, in order, then returns "done"."""

    def __init__(self, *errors: BusError) -> None:
        self.errors = list(errors)
        self.tries = 0

    async def __call__(self) -> str:
        self.tries += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


class RecordedSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def test_a_pushed_back_call_waits_and_then_succeeds() -> None:
    call = Flaky(refused(BusErrorCode.OVERLOADED), refused(BusErrorCode.CIRCUIT_OPEN))
    sleep = RecordedSleep()
    result = await call_with_retry(
        call, tool_is_safe=False, policy=POLICY, rng=random.Random(1), sleep=sleep
    )
    assert result == "done"
    assert call.tries == 3
    assert len(sleep.waits) == 2


async def test_an_unsafe_call_whose_outcome_is_unknown_fails_at_once() -> None:
    call = Flaky(refused(BusErrorCode.OUTCOME_UNKNOWN))
    sleep = RecordedSleep()
    with pytest.raises(CallError) as failed:
        await call_with_retry(
            call, tool_is_safe=False, policy=POLICY, rng=random.Random(1), sleep=sleep
        )
    assert failed.value.code == BusErrorCode.OUTCOME_UNKNOWN
    assert (call.tries, sleep.waits) == (1, [])


async def test_a_pool_that_stays_overloaded_gives_the_row_its_last_error() -> None:
    call = Flaky(*(refused(BusErrorCode.OVERLOADED) for _ in range(10)))
    sleep = RecordedSleep()
    with pytest.raises(CallError):
        await call_with_retry(
            call, tool_is_safe=True, policy=POLICY, rng=random.Random(1), sleep=sleep
        )
    assert call.tries == POLICY.max_attempts
    assert len(sleep.waits) == POLICY.max_attempts - 1


async def test_a_safe_call_timing_out_again_and_again_is_given_up_after_one_repeat() -> None:
    call = Flaky(*(BusTimeout("tools/call", 60.0) for _ in range(10)))
    with pytest.raises(BusTimeout):
        await call_with_retry(
            call, tool_is_safe=True, policy=POLICY, rng=random.Random(1), sleep=RecordedSleep()
        )
    assert call.tries == 2
