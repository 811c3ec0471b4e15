"""The autoscaling policy, driven by an injected clock and synthetic signals."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.autoscaler import AutoscaleConfig, Decision, LagPolicy, Signals
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


def test_a_step_warm_spares_cover_is_taken_at_once() -> None:
    p, clock = policy(max_step_up=8)
    decision = p.decide("p", 1, Signals(at_s=clock.now, queued=15, in_flight=0, spares=1))
    assert decision.desired == 2  # the spare, with no delay
    assert "warm spare" in decision.reason


def test_a_step_that_needs_starts_waits_out_the_delay_and_is_taken_whole() -> None:
    p, clock = policy(max_step_up=8)
    assert p.decide("p", 1, Signals(at_s=clock.now, queued=100, in_flight=0, spares=1)).desired == 1
    clock.advance(1.0)
    decision = p.decide("p", 1, Signals(at_s=clock.now, queued=100, in_flight=0, spares=1))
    assert decision.desired == 8  # spare and starts together, not staged
    assert "scale up" in decision.reason


def test_no_more_spares_are_activated_than_the_load_wants() -> None:
    p, clock = policy()
    spares = Signals(at_s=clock.now, queued=15, in_flight=0, spares=3)
    assert p.decide("p", 1, spares).desired == 2


def test_spares_do_not_wake_a_pool_whose_load_fits() -> None:
    p, clock = policy()
    assert p.decide("p", 2, Signals(at_s=clock.now, queued=5, in_flight=10, spares=2)).desired == 2


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


@settings(max_examples=50, deadline=None)
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


@settings(deadline=None)  # a loaded machine is no failure of the policy
@given(st.lists(st.tuples(st.integers(0, 500), st.integers(0, 500), st.floats(0, 3)), max_size=40))
def test_decisions_stay_within_bounds(steps: list[tuple[int, int, float]]) -> None:
    p, clock = policy(min_workers=2, max_workers=6, upscale_delay_s=0.5, downscale_window_s=3)
    size = 2
    for queued, in_flight, gap in steps:
        clock.advance(gap)
        size = p.decide("p", size, load(clock, queued, in_flight)).desired
        assert 2 <= size <= 6


@settings(deadline=None)  # a loaded machine is no failure of the policy
@given(st.integers(0, 400), st.integers(0, 400))
def test_desired_is_monotone_in_load(a: int, b: int) -> None:
    p, clock = policy(upscale_delay_s=0, max_step_up=100)
    low, high = sorted((a, b))
    raw_low = p.decide("x", 1, load(clock, low)).raw_desired
    raw_high = p.decide("y", 1, load(clock, high)).raw_desired
    assert raw_low is not None
    assert raw_high is not None
    assert raw_low <= raw_high


# -- the resource ceiling -------------------------------------------------------------

NOTE = "the cluster has 2 CPU(s) free for workers of 1 CPU(s)"


def limited_policy(min_workers: int = 1, **config: float) -> tuple[LagPolicy, FakeClock]:
    clock = FakeClock()
    settings_ = {"target_per_worker": 10.0, "upscale_delay_s": 0, "max_step_up": 100, **config}
    config_ = AutoscaleConfig(**settings_)
    return LagPolicy(config_, min_workers, 8, clock, limited_by_cluster=True), clock


def with_room(clock: FakeClock, queued: int, room: int | None, note: str = NOTE) -> Signals:
    return Signals(at_s=clock.now, queued=queued, in_flight=0, room=room, room_note=note)


def test_a_limited_pool_grows_only_by_the_room_the_cluster_has_and_says_why() -> None:
    p, clock = limited_policy()
    decision = p.decide("p", 1, with_room(clock, 1000, 2))
    assert decision.desired == 3
    assert f"ceiling 3: {NOTE}" in decision.reason


def test_without_room_a_loaded_pool_holds_and_says_why() -> None:
    p, clock = limited_policy()
    decision = p.decide("p", 2, with_room(clock, 1000, 0, "nodes with zone=a have 0 accel free"))
    assert decision.desired == 2
    assert decision.raw_desired == 100
    assert "ceiling 2: nodes with zone=a have 0 accel free" in decision.reason


def test_a_pool_at_zero_without_room_stays_asleep_and_says_why() -> None:
    p, clock = limited_policy(min_workers=0)
    decision = p.decide("p", 0, with_room(clock, 5, 0))
    assert decision.desired == 0
    assert "ceiling 0" in decision.reason
    assert p.decide("p", 0, with_room(clock, 5, 1)).desired == 1


def test_with_enough_room_only_max_workers_limits_and_the_reason_names_no_ceiling() -> None:
    p, clock = limited_policy()
    decision = p.decide("p", 1, with_room(clock, 1000, 64))
    assert decision.desired == 8
    assert "ceiling" not in decision.reason


def test_pools_not_limited_by_the_cluster_have_no_resource_ceiling() -> None:
    p, clock = policy(upscale_delay_s=0, max_step_up=100)
    assert p.decide("p", 1, with_room(clock, 1000, 0)).desired == 8
    assert p.decide("q", 1, with_room(clock, 1000, None)).desired == 8


def test_a_limited_pool_without_a_reading_does_not_grow() -> None:
    p, clock = limited_policy()
    decision = p.decide("p", 2, with_room(clock, 1000, None))
    assert decision.desired == 2
    assert "no reading of the cluster's free resources" in decision.reason


def test_the_ceiling_never_forces_a_scale_down() -> None:
    p, clock = limited_policy(downscale_window_s=0)
    assert p.decide("p", 5, with_room(clock, 50, 0)).desired == 5


@settings(deadline=None)  # a loaded machine is no failure of the policy
@given(st.integers(1, 8), st.integers(0, 2000), st.integers(0, 16))
def test_scale_ups_never_pass_the_room_the_cluster_has(
    current: int, queued: int, room: int
) -> None:
    p, clock = limited_policy()
    desired = p.decide("p", current, with_room(clock, queued, room)).desired
    assert desired <= max(current, current + room)


# -- throughput saturation ------------------------------------------------------------


class Pool:
    """A simulated pool: its routed size and a completed-calls counter fed by a rate."""

    def __init__(self, policy: LagPolicy, clock: FakeClock, size: int) -> None:
        self.policy, self.clock, self.size = policy, clock, size
        self.completed = 0.0
        self.decisions: list[Decision] = []

    def run(
        self,
        seconds: float,
        rate: float,
        queued: int,
        *,
        routed: int | None = None,
        until_resized: bool = False,
    ) -> Decision:
        """Observe every 0.5 s for up to ``seconds``, serving ``rate`` calls/s; apply
        each decision (a resize takes effect by the next observation)."""
        decision = None
        for _ in range(round(seconds / 0.5)):
            self.clock.advance(0.5)
            self.completed += rate * 0.5
            signals = Signals(
                at_s=self.clock.now,
                queued=queued,
                in_flight=self.size * 8,
                completed=int(self.completed),
                workers=self.size if routed is None else routed,
            )
            decision = self.policy.decide("p", self.size, signals)
            self.decisions.append(decision)
            self.size = decision.desired
            if until_resized and decision.desired != decision.current:
                break
        assert decision is not None
        return decision


def saturation_policy(**config: float) -> tuple[LagPolicy, FakeClock]:
    settings_ = {
        "target_per_worker": 8.0,
        # Sized so a pool serves a full window at its size before it grows: the step
        # from it has a baseline (with the default 0.5 s, the first step has none).
        "upscale_delay_s": 2.0,
        "downscale_window_s": 30.0,
        "max_step_up": 2,
        "saturation_window_s": 2.0,
        **config,
    }
    clock = FakeClock()
    return LagPolicy(AutoscaleConfig(**settings_), 1, 16, clock), clock


def ups(pool: Pool) -> list[tuple[int, int]]:
    return [(d.current, d.desired) for d in pool.decisions if d.desired > d.current]


def saturated_at_4(pool: Pool) -> Decision:
    """2 workers serve 40 calls/s under a queue, 4 serve 42: the step added 5% of 100%."""
    pool.run(10, rate=40, queued=200, until_resized=True)
    assert ups(pool) == [(2, 4)]
    return pool.run(2.5, rate=42, queued=200)


def test_a_scale_up_that_adds_no_throughput_holds_the_pool_for_the_cooldown() -> None:
    p, clock = saturation_policy()
    pool = Pool(p, clock, 2)
    held = saturated_at_4(pool)
    assert "saturated: 4 workers served 42.0 calls/s, 2 served 40.0 (+5%" in held.reason
    assert "holding at 4" in held.reason
    pool.run(26, rate=42, queued=200)
    assert pool.size == 4  # the cool-down (the 30 s downscale window) is not over
    pool.run(6, rate=42, queued=200)
    assert pool.size > 4  # it is over: the pool may try again


def test_a_scale_up_that_pays_off_lets_the_pool_keep_growing() -> None:
    p, clock = saturation_policy()
    pool = Pool(p, clock, 2)
    pool.run(10, rate=40, queued=200, until_resized=True)
    pool.run(10, rate=75, queued=200, until_resized=True)  # 4 serve +88% of +100%
    assert ups(pool) == [(2, 4), (4, 6)]
    assert not any("saturated" in d.reason for d in pool.decisions)


def test_while_new_workers_are_measured_the_pool_does_not_grow_further() -> None:
    p, clock = saturation_policy(upscale_delay_s=0)
    pool = Pool(p, clock, 2)
    pool.run(10, rate=40, queued=200, until_resized=True)
    during = pool.run(1.5, rate=80, queued=200)
    assert pool.size == 4
    assert "measuring the calls/s of 4 workers" in during.reason
    pool.run(1, rate=80, queued=200)
    assert pool.size == 6  # measured: +100% of +100%, so it grows


def test_new_workers_not_yet_routed_are_waited_for_then_given_up_on() -> None:
    p, clock = saturation_policy(upscale_delay_s=0, stale_after_s=5)
    pool = Pool(p, clock, 2)
    pool.run(10, rate=40, queued=200, until_resized=True)
    waiting = pool.run(2, rate=40, queued=200, routed=3)
    assert pool.size == 4
    assert "waiting for the 4 workers to serve" in waiting.reason
    pool.run(4, rate=40, queued=200, routed=3)  # one never started: growth resumes
    assert pool.size > 4


def test_a_drop_in_load_clears_a_saturation_hold() -> None:
    p, clock = saturation_policy()
    pool = Pool(p, clock, 2)
    assert "saturated" in saturated_at_4(pool).reason
    pool.run(0.5, rate=40, queued=0)  # 4 x 8 in flight: no more workers wanted
    pool.run(3, rate=40, queued=200)  # a new surge: up after the delay, not the cool-down
    assert pool.size > 4


def test_no_judgement_when_the_queue_emptied_while_measuring() -> None:
    p, clock = saturation_policy(upscale_delay_s=0)
    pool = Pool(p, clock, 2)
    pool.run(10, rate=40, queued=200, until_resized=True)
    pool.run(1, rate=40, queued=0)
    pool.run(2, rate=40, queued=200)  # the window had an empty queue: nothing judged
    assert not any("saturated" in d.reason for d in pool.decisions)
    assert pool.size > 4


def test_the_rate_measured_at_a_size_is_the_baseline_of_the_next_step() -> None:
    p, clock = saturation_policy(upscale_delay_s=0)
    pool = Pool(p, clock, 2)
    pool.run(10, rate=40, queued=200, until_resized=True)  # 2 -> 4
    pool.run(10, rate=80, queued=200, until_resized=True)  # 4 measured at 80/s, -> 6
    assert ups(pool) == [(2, 4), (4, 6)]
    held = pool.run(2.5, rate=82, queued=200)  # 6 serve 82/s: +2.5% of +50%
    assert "saturated: 6 workers served 82.0 calls/s, 4 served 80.0" in held.reason
    assert pool.size == 6


def test_without_a_completed_counter_the_saturation_rule_does_not_apply() -> None:
    p, clock = saturation_policy(upscale_delay_s=0)
    size = 2
    for _ in range(7):
        clock.advance(0.5)
        signals = Signals(at_s=clock.now, queued=200, in_flight=size * 8, workers=size)
        size = p.decide("p", size, signals).desired
    assert size == 16  # grew every round by max_step_up: no measuring, no hold


def test_a_restarted_counter_is_not_read_as_a_collapse() -> None:
    p, clock = saturation_policy()
    pool = Pool(p, clock, 2)
    pool.run(10, rate=40, queued=200, until_resized=True)
    pool.completed = 0  # the router restarted
    pool.run(10, rate=80, queued=200, until_resized=True)
    assert not any("saturated" in d.reason for d in pool.decisions)
    assert pool.size == 6


def test_a_min_gain_of_zero_turns_the_rule_off() -> None:
    p, clock = saturation_policy(saturation_min_gain=0, upscale_delay_s=0)
    pool = Pool(p, clock, 2)
    pool.run(10, rate=40, queued=200, until_resized=True)
    pool.run(1, rate=40, queued=200)
    assert not any("saturated" in d.reason or "measuring" in d.reason for d in pool.decisions)
    assert pool.size > 4
