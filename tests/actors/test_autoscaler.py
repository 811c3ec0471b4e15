"""The autoscaling policy, driven by an injected clock and synthetic signals."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.autoscaler import AutoscaleConfig, LagPolicy, Signals
from tests.actors.fakes import FakeClock


def policy(
    min_workers: int = 1, max_workers: int = 8, **config: float
) -> tuple[LagPolicy, FakeClock]:
    clock = FakeClock()
    settings_ = {
        "target_per_worker": 10.0,
        "upscale_delay_s": 1.0,
        "downscale_window_s": 30.0,
        **config,
    }
    return LagPolicy(AutoscaleConfig(**settings_), min_workers, max_workers, clock), clock


def load(clock: FakeClock, queued: int, in_flight: int = 0) -> Signals:
    return Signals(at_s=clock.now, queued=queued, in_flight=in_flight)


def test_desired_is_load_over_target_rounded_up_and_clamped() -> None:
    p, clock = policy(upscale_delay_s=0, max_step_up=100)
    assert p.decide("p", 1, load(clock, 25, 10)).desired == 4
    assert p.decide("p", 1, load(clock, 1000)).desired == 8
    assert p.decide("p", 1, load(clock, 0)).raw_desired == 0


def test_scale_up_waits_for_the_upscale_delay_and_respects_the_step() -> None:
    p, clock = policy(max_step_up=2)
    assert p.decide("p", 1, load(clock, 100)).desired == 1
    clock.advance(0.5)
    assert p.decide("p", 1, load(clock, 100)).desired == 1
    clock.advance(0.5)
    decision = p.decide("p", 1, load(clock, 100))
    assert decision.desired == 3
    assert "scale up" in decision.reason


def test_a_short_spike_below_the_delay_does_not_scale() -> None:
    p, clock = policy()
    p.decide("p", 1, load(clock, 100))
    clock.advance(0.5)
    assert p.decide("p", 1, load(clock, 5)).desired == 1
    clock.advance(0.6)
    assert p.decide("p", 1, load(clock, 100)).desired == 1  # the delay restarted


def test_scale_down_only_after_the_window_and_by_a_bounded_step() -> None:
    p, clock = policy(max_step_down=1)
    for _ in range(29):
        assert p.decide("p", 4, load(clock, 0)).desired == 4
        clock.advance(1)
    clock.advance(1)
    assert p.decide("p", 4, load(clock, 0)).desired == 3
    assert p.decide("p", 3, load(clock, 0)).desired == 3  # a new window starts


def test_scale_down_goes_to_the_highest_need_seen_in_the_window() -> None:
    p, clock = policy(max_step_down=10)
    p.decide("p", 6, load(clock, 0))
    clock.advance(10)
    p.decide("p", 6, load(clock, 30))  # needs 3
    clock.advance(21)
    assert p.decide("p", 6, load(clock, 0)).desired == 3


def test_missing_or_stale_signals_hold_the_size() -> None:
    p, clock = policy(upscale_delay_s=0)
    assert p.decide("p", 3, None).desired == 3
    assert p.decide("p", 3, Signals(clock.now, None, 4)).desired == 3
    stale = Signals(clock.now - 10, 1000, 0)
    decision = p.decide("p", 3, stale)
    assert decision.desired == 3
    assert "holding" in decision.reason


def test_a_pool_at_zero_wakes_on_the_first_queued_call_without_delay() -> None:
    p, clock = policy(min_workers=0, upscale_delay_s=5)
    assert p.decide("p", 0, load(clock, 0)).desired == 0
    woken = p.decide("p", 0, load(clock, 1))
    assert woken.desired == 1
    assert "activation" in woken.reason


def test_a_pool_may_shrink_to_zero_when_allowed() -> None:
    p, clock = policy(min_workers=0, downscale_window_s=5)
    p.decide("p", 1, load(clock, 0))
    clock.advance(6)
    assert p.decide("p", 1, load(clock, 0)).desired == 0


def test_max_consumers_caps_the_size() -> None:
    p, clock = policy(upscale_delay_s=0, max_step_up=100, max_consumers=3)
    assert p.decide("p", 1, load(clock, 1000)).desired == 3


@settings(max_examples=50)
@given(st.integers(min_value=1, max_value=20), st.integers(min_value=1, max_value=5))
def test_a_square_wave_does_not_flap(period_s: int, cycles: int) -> None:
    """Load alternating high/low faster than the downscale window never scales down."""
    p, clock = policy(upscale_delay_s=0, max_step_up=100, downscale_window_s=30)
    size = 1
    sizes = []
    for cycle in range(cycles * 2):
        queued = 100 if cycle % 2 == 0 else 0
        for _ in range(period_s):
            size = p.decide("p", size, load(clock, queued)).desired
            sizes.append(size)
            clock.advance(1)
    if period_s < 30:
        assert sizes == sorted(sizes)  # only ever grows
        assert max(sizes) - min(sizes) <= 9


@given(st.lists(st.tuples(st.integers(0, 500), st.integers(0, 500), st.floats(0, 3)), max_size=40))
def test_decisions_stay_within_bounds(steps: list[tuple[int, int, float]]) -> None:
    p, clock = policy(min_workers=2, max_workers=6, upscale_delay_s=0.5, downscale_window_s=3)
    size = 2
    for queued, in_flight, gap in steps:
        clock.advance(gap)
        size = p.decide("p", size, load(clock, queued, in_flight)).desired
        assert 2 <= size <= 6


@given(st.integers(0, 400), st.integers(0, 400))
def test_desired_is_monotone_in_load(a: int, b: int) -> None:
    p, clock = policy(upscale_delay_s=0, max_step_up=100)
    low, high = sorted((a, b))
    raw_low = p.decide("x", 1, load(clock, low)).raw_desired
    raw_high = p.decide("y", 1, load(clock, high)).raw_desired
    assert raw_low is not None
    assert raw_high is not None
    assert raw_low <= raw_high
