"""The dedup ledger: decisions, TTL and size bounds, against a fake clock and a model."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.ledger import Decision, DecisionKind, DedupLedger, PoolLedger


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_new_key_runs_once_and_its_duplicate_is_dropped_while_it_runs(clock: FakeClock) -> None:
    ledger = DedupLedger(max_entries=10, ttl_s=60, clock=clock)
    assert ledger.begin("k").kind is DecisionKind.NEW
    assert ledger.begin("k").kind is DecisionKind.IN_PROGRESS
    assert ledger.begin("other").kind is DecisionKind.NEW


def test_a_completed_key_returns_its_stored_response_instead_of_running(clock: FakeClock) -> None:
    ledger = DedupLedger(max_entries=10, ttl_s=60, clock=clock)
    ledger.begin("k")
    ledger.complete("k", b'{"jsonrpc":"2.0","id":1,"result":{}}')
    decision = ledger.begin("k")
    assert decision == Decision(DecisionKind.DONE, b'{"jsonrpc":"2.0","id":1,"result":{}}')
    assert ledger.begin("k").kind is DecisionKind.DONE


def test_keys_are_forgotten_after_the_ttl(clock: FakeClock) -> None:
    ledger = DedupLedger(max_entries=10, ttl_s=60, clock=clock)
    ledger.begin("running")
    clock.advance(30)
    ledger.begin("done")
    ledger.complete("done", b"r")
    clock.advance(30)
    assert ledger.begin("running").kind is DecisionKind.NEW  # began 60 s ago
    clock.advance(29.5)
    assert ledger.begin("done").kind is DecisionKind.DONE  # completed 59.5 s ago
    clock.advance(0.5)
    assert ledger.begin("done").kind is DecisionKind.NEW


def test_completion_restarts_the_ttl(clock: FakeClock) -> None:
    ledger = DedupLedger(max_entries=10, ttl_s=10, clock=clock)
    ledger.begin("k")
    clock.advance(9)
    ledger.complete("k", b"r")
    clock.advance(9)
    assert ledger.begin("k") == Decision(DecisionKind.DONE, b"r")


def test_the_oldest_entry_is_evicted_beyond_the_size_bound(clock: FakeClock) -> None:
    ledger = DedupLedger(max_entries=3, ttl_s=60, clock=clock)
    for key in "abc":
        ledger.begin(key)
    ledger.complete("a", b"a")  # completing makes "a" the newest
    ledger.begin("d")
    assert len(ledger) == 3
    assert ledger.begin("b").kind is DecisionKind.NEW  # evicted, so it runs again
    assert ledger.begin("a") == Decision(DecisionKind.DONE, b"a")


def test_a_key_that_expired_while_running_is_still_recorded_when_it_completes(
    clock: FakeClock,
) -> None:
    ledger = DedupLedger(max_entries=10, ttl_s=5, clock=clock)
    ledger.begin("slow")
    clock.advance(6)
    ledger.complete("slow", b"late")
    assert ledger.begin("slow") == Decision(DecisionKind.DONE, b"late")


def test_an_abandoned_run_may_run_again_but_a_completed_one_stays(clock: FakeClock) -> None:
    ledger = DedupLedger(max_entries=10, ttl_s=60, clock=clock)
    ledger.begin("failed")
    ledger.abandon("failed")
    assert ledger.begin("failed").kind is DecisionKind.NEW
    ledger.begin("ok")
    ledger.complete("ok", b"r")
    ledger.abandon("ok")
    assert ledger.begin("ok").kind is DecisionKind.DONE


@pytest.mark.parametrize(("max_entries", "ttl_s"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_bounds_must_be_positive(max_entries: int, ttl_s: float) -> None:
    with pytest.raises(ValueError):
        DedupLedger(max_entries=max_entries, ttl_s=ttl_s)


class _Model:
    """The ledger's rules written the slow, obvious way: a list ordered by last write."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.rows: list[tuple[str, float, bytes | None]] = []

    def _live(self, now: float) -> None:
        self.rows = [row for row in self.rows if row[1] > now - self.ttl_s]

    def _write(self, key: str, now: float, response: bytes | None) -> None:
        self.rows = [row for row in self.rows if row[0] != key] + [(key, now, response)]
        self.rows = self.rows[-self.max_entries :]

    def begin(self, key: str, now: float) -> Decision:
        self._live(now)
        for row_key, _, response in self.rows:
            if row_key == key:
                if response is None:
                    return Decision(DecisionKind.IN_PROGRESS)
                return Decision(DecisionKind.DONE, response)
        self._write(key, now, None)
        return Decision(DecisionKind.NEW)

    def complete(self, key: str, response: bytes, now: float) -> None:
        self._live(now)
        self._write(key, now, response)


_operations = st.lists(
    st.one_of(
        st.tuples(st.just("begin"), st.sampled_from("abcdef")),
        st.tuples(st.just("complete"), st.sampled_from("abcdef")),
        st.tuples(st.just("wait"), st.sampled_from([0.5, 1.0, 3.0, 7.0])),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    max_entries=st.integers(min_value=1, max_value=5),
    ttl_s=st.sampled_from([1.0, 4.0, 10.0]),
    operations=_operations,
)
def test_the_ledger_decides_like_the_model_and_stays_bounded(
    max_entries: int, ttl_s: float, operations: list[tuple[str, str | float]]
) -> None:
    clock = FakeClock()
    ledger = DedupLedger(max_entries=max_entries, ttl_s=ttl_s, clock=clock)
    model = _Model(max_entries, ttl_s)
    for step, (operation, argument) in enumerate(operations):
        if operation == "wait":
            assert isinstance(argument, float)
            clock.advance(argument)
            continue
        assert isinstance(argument, str)
        if operation == "begin":
            assert ledger.begin(argument) == model.begin(argument, clock.now)
        else:
            response = f"{argument}-{step}".encode()
            ledger.complete(argument, response)
            model.complete(argument, response, clock.now)
        assert len(ledger) <= max_entries


# -- keyed requests (PoolLedger) --------------------------------------------------------

WITHDRAWN = b'{"jsonrpc":"2.0","id":null,"error":{"code":1005,"message":"cancelled"}}'


def pool_ledger(clock: FakeClock) -> PoolLedger:
    return PoolLedger(ttl_s=60, max_entries=10, keyed_ttl_s=3600, keyed_max_entries=3, clock=clock)


def test_keyed_entries_outlive_the_correlation_ttl_and_expire_at_their_own(
    clock: FakeClock,
) -> None:
    ledger = pool_ledger(clock)
    assert ledger.by_correlation.begin("c").kind is DecisionKind.NEW
    assert ledger.begin_keyed("k", "d1").kind is DecisionKind.NEW
    ledger.complete_keyed("k", b"answer")
    clock.advance(61)
    assert ledger.by_correlation.begin("c").kind is DecisionKind.NEW  # forgotten at 60 s
    assert ledger.begin_keyed("k", "d1") == Decision(DecisionKind.DONE, b"answer")
    clock.advance(3600 - 61)
    assert ledger.begin_keyed("k", "d1").kind is DecisionKind.NEW  # forgotten at 3600 s


def test_keyed_entries_have_their_own_bound(clock: FakeClock) -> None:
    ledger = pool_ledger(clock)
    for index in range(5):
        ledger.by_correlation.begin(f"c{index}")
    for key in ("k1", "k2", "k3", "k4"):
        ledger.begin_keyed(key, "d")
    assert len(ledger.keyed) == 3  # k1 evicted by its own bound of 3
    assert len(ledger.by_correlation) == 5  # untouched by the keyed bound
    assert ledger.begin_keyed("k1", "d").kind is DecisionKind.NEW


def test_a_key_reused_with_other_arguments_is_a_conflict_running_or_done(
    clock: FakeClock,
) -> None:
    ledger = pool_ledger(clock)
    assert ledger.begin_keyed("k", "digest-a").kind is DecisionKind.NEW
    assert ledger.begin_keyed("k", "digest-b").kind is DecisionKind.CONFLICT
    assert ledger.begin_keyed("k", "digest-a").kind is DecisionKind.IN_PROGRESS
    ledger.complete_keyed("k", b"answer")
    assert ledger.begin_keyed("k", "digest-b").kind is DecisionKind.CONFLICT
    assert ledger.begin_keyed("k", "digest-a") == Decision(DecisionKind.DONE, b"answer")


def test_an_abandoned_keyed_run_gives_its_key_back(clock: FakeClock) -> None:
    ledger = pool_ledger(clock)
    ledger.begin_keyed("k", "d", alias="c")
    ledger.abandon_keyed("k", alias="c")
    assert ledger.begin_keyed("k", "d").kind is DecisionKind.NEW


def test_a_withdrawn_alias_answers_the_withdrawal_and_claims_no_key(clock: FakeClock) -> None:
    ledger = pool_ledger(clock)
    assert ledger.withdraw("c", WITHDRAWN)
    assert ledger.begin_keyed("k", "d", alias="c") == Decision(DecisionKind.DONE, WITHDRAWN)
    assert ledger.begin_keyed("k", "d", alias="resend").kind is DecisionKind.NEW


def test_a_keyed_run_under_way_cannot_be_withdrawn_by_its_alias(clock: FakeClock) -> None:
    ledger = pool_ledger(clock)
    assert ledger.begin_keyed("k", "d", alias="c").kind is DecisionKind.NEW
    assert not ledger.withdraw("c", WITHDRAWN)  # the caller tells the workers instead
    ledger.complete_keyed("k", b"answer", alias="c")
    assert ledger.begin_keyed("k", "d", alias="c2") == Decision(DecisionKind.DONE, b"answer")


def test_a_keyed_run_in_progress_past_its_bound_is_lost(clock: FakeClock) -> None:
    ledger = pool_ledger(clock)
    assert ledger.begin_keyed("k", "d", lost_after_s=100).kind is DecisionKind.NEW
    clock.advance(100)
    assert ledger.begin_keyed("k", "d", lost_after_s=100).kind is DecisionKind.IN_PROGRESS
    clock.advance(1)
    assert ledger.begin_keyed("k", "d", lost_after_s=100).kind is DecisionKind.LOST
    assert ledger.begin_keyed("k", "d").kind is DecisionKind.IN_PROGRESS  # no bound given
