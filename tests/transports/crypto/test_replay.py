"""Replay windows against a plain reference model, and the reserve/commit/release steps."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from transports.crypto.replay import MIN_WINDOW, ReplayGuard, ReplayWindow


@settings(max_examples=300)
@given(st.lists(st.integers(min_value=0, max_value=400), max_size=300))
def test_a_window_accepts_exactly_what_a_set_and_a_horizon_allow(seqs: list[int]) -> None:
    window = ReplayWindow(MIN_WINDOW)
    accepted: set[int] = set()
    highest = -1
    for seq in seqs:
        expected = seq not in accepted and seq > highest - MIN_WINDOW
        assert window.accept(seq) is expected
        if expected:
            accepted.add(seq)
            highest = max(highest, seq)


def test_in_window_reordering_is_accepted_once() -> None:
    window = ReplayWindow(64)
    for seq in (10, 3, 7, 0, 63 + 10):
        assert window.accept(seq)
    assert not window.accept(10)  # accepted before, 63 below the highest
    assert not window.accept(9)  # 73 - 9 = 64: just out of the window
    assert window.accept(10 + 1)  # 62 below the highest: in the window, never seen


def test_a_pending_number_is_refused_until_released_then_accepted_again() -> None:
    window = ReplayWindow(64)
    assert window.reserve(5)
    assert not window.reserve(5)  # a copy while the first is in progress
    window.release(5)  # nacked: the broker redelivers it
    assert window.reserve(5)
    window.commit(5)  # acked
    assert not window.reserve(5)


def test_a_jump_past_the_whole_window_forgets_everything_below() -> None:
    window = ReplayWindow(64)
    assert window.accept(1)
    assert window.accept(1000)
    assert not window.accept(1000)
    assert not window.accept(1)
    assert window.accept(999)


def test_the_guard_keeps_one_window_per_sender_and_forgets_the_least_recent() -> None:
    guard = ReplayGuard(window=64, max_senders=2)
    assert guard.window_of("a").accept(1)
    assert guard.window_of("b").accept(1)
    assert not guard.window_of("a").accept(1)  # "a" is now the most recent
    assert guard.window_of("c").accept(1)  # evicts "b"
    assert guard.window_of("b").accept(1)  # forgotten: a new window
    assert not guard.window_of("c").accept(1)
