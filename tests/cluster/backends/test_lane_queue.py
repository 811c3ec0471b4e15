"""What a direct lane holds for a pool's slots, and what the router hears of it."""

from __future__ import annotations

from dataclasses import replace

from cluster.backends.lane_queue import LaneQueue
from tests.actors.fakes import FakeClock
from tests.actors.test_router import call
from transports.frame import Frame


def test_rows_count_held_calls_per_pool_with_the_oldest_ones_age() -> None:
    clock = FakeClock()
    queue = LaneQueue(max_per_pool=10, clock=clock)
    queue.hold(call("a", 1), "kit")
    clock.advance(1.0)
    queue.hold(call("a", 2), "kit")
    queue.hold(call("a", 3, "other"), "other")
    clock.advance(0.5)
    assert queue.rows() == {"kit": (2, 1.5), "other": (1, 0.5)}
    assert queue.take(call("a", 1).envelope.correlation_key) is not None
    assert queue.rows() == {"kit": (1, 0.5), "other": (1, 0.5)}
    assert queue.take(call("a", 1).envelope.correlation_key) is None  # taken once only
    assert queue.take_ended() == []  # sent on is not an end


def test_the_bound_is_per_pool_and_order_is_arrival() -> None:
    queue = LaneQueue(max_per_pool=2)
    for n in (1, 2):
        assert queue.has_room("kit")
        queue.hold(call("a", n), "kit")
    assert not queue.has_room("kit")
    assert queue.has_room("other")
    queue.hold(call("a", 3, "other"), "other")
    assert [frame.envelope.request_id for frame, _ in queue.in_order()] == ["1", "2", "3"]
    assert queue.holds_for("kit")
    assert queue.holds_for("other")
    assert not queue.holds_for("x")


def test_cancelled_and_expired_calls_leave_and_are_reported_as_ended() -> None:
    queue = LaneQueue(max_per_pool=10)
    soon = call("a", 2)
    soon = Frame(replace(soon.envelope, deadline_unix_s=100.0), soon.body)
    queue.hold(call("a", 1), "kit")
    queue.hold(soon, "kit")
    queue.hold(call("a", 3), "kit")
    assert queue.cancel(call("a", 3).envelope.correlation_key)
    assert not queue.cancel(call("a", 3).envelope.correlation_key)
    assert queue.expire(99.0) == []
    assert [(f.envelope.request_id, p) for f, p in queue.expire(101.0)] == [("2", "kit")]
    assert len(queue) == 1
    assert queue.has_ended()
    assert queue.take_ended() == [("kit", "echo", "cancelled"), ("kit", "echo", "timeout")]
    assert not queue.has_ended()
