"""What the router core hands its metrics port: one tally per batch, bounded labels."""

from __future__ import annotations

from typing import Any

import pytest

from actors.router.breaker import BreakerConfig
from actors.router.core import Completion, RouterConfig, RouterCore
from actors.router.outcomes import UNROUTED, CallOutcome
from tests.actors.fakes import FakeClock, RecordingRouterMetrics, RecordingRouterPorts
from tests.actors.test_router import call, registry_with
from transports.errors import INTERNAL_ERROR, INVALID_PARAMS, BusErrorCode
from transports.frame import Frame


def measured_router(
    *workers: tuple[str, int], **config: Any
) -> tuple[RouterCore, RecordingRouterPorts, RecordingRouterMetrics, FakeClock]:
    ports = RecordingRouterPorts()
    metrics = RecordingRouterMetrics()
    clock = FakeClock()
    core = RouterCore(RouterConfig(**config), ports, clock=clock, wall_clock=clock, metrics=metrics)
    core.apply_membership(registry_with(*workers).snapshot())
    return core, ports, metrics, clock


def key(frame: Frame) -> tuple[str, str, str]:
    return frame.envelope.correlation_key


def test_a_batch_of_completions_is_one_tally_by_pool_tool_and_outcome() -> None:
    core, ports, metrics, clock = measured_router(("w1", 8))
    core.submit([call("a", 1), call("a", 2), call("a", 3), call("a", 4, "lookup")])
    assert metrics.tallies == []  # delivered, not ended: nothing to count yet
    clock.advance(0.25)
    first, second, third, fourth = ports.delivered_to("w1")
    core.completed(
        "w1",
        [
            Completion(key(first), False, 0.1),
            Completion(key(second), False, 0.1, tool_error=True),
            Completion(key(third), True, 0.1, error_code=INTERNAL_ERROR),
            Completion(key(fourth), False, 0.1, error_code=INVALID_PARAMS),
        ],
    )
    [tally] = metrics.tallies
    assert tally.outcomes == {
        ("kit", "echo", "ok"): 1,
        ("kit", "echo", "tool_error"): 1,
        ("kit", "echo", "fault"): 1,
        ("kit", "lookup", "error"): 1,
    }
    assert tally.latencies_s == {"kit": [pytest.approx(0.25)] * 4}


def test_calls_the_router_refuses_are_counted_with_their_reason() -> None:
    core, _, metrics, clock = measured_router(("w1", 1), max_pending_per_pool=1)
    core.submit(
        [call("a", 1), call("a", 2), call("a", 3), call("a", 1), call("a", 9, "nope")],
    )
    core.submit([call("b", 1, deadline=clock.now - 1)])
    assert metrics.outcomes() == {
        ("kit", "echo", "overloaded"): 1,  # one runs, one waits, the third is turned away
        (UNROUTED, UNROUTED, "invalid"): 1,  # its id is already in flight
        (UNROUTED, UNROUTED, "unroutable"): 1,  # the client's name is never a label
        (UNROUTED, UNROUTED, "timeout"): 1,  # its deadline passed before routing
    }
    assert len(metrics.tallies) == 2  # one per submitted batch


def test_queued_calls_that_expire_or_are_cancelled_are_counted_per_pool() -> None:
    core, _, metrics, clock = measured_router(("w1", 1))
    core.submit([call("a", 1), call("a", 2, deadline=clock.now + 1), call("a", 3)])
    core.cancel([call("a", 3).envelope.correlation_key])
    clock.advance(2)
    core.tick()
    assert metrics.outcomes() == {("kit", "echo", "cancelled"): 1, ("kit", "echo", "timeout"): 1}
    assert all(not t.latencies_s for t in metrics.tallies)  # none reached a worker


def test_an_open_breaker_and_a_lost_worker_are_counted() -> None:
    breaker = BreakerConfig(minimum_calls=1, failure_rate_threshold=0.5)
    core, ports, metrics, _ = measured_router(("w1", 4), ("w2", 4), breaker=breaker)
    core.submit([call("a", 1)])
    [frame] = [f for _, frames in ports.delivered for f in frames]
    worker = ports.delivered[0][0]
    core.completed(worker, [Completion(key(frame), True, 0.1, error_code=INTERNAL_ERROR)])
    core.submit([call("a", 2)])
    assert metrics.outcomes()[("kit", "echo", "circuit_open")] == 1
    core, ports, metrics, _ = measured_router(("w1", 4))
    core.submit([call("a", 1)])
    core.apply_membership(registry_with(("w2", 4)).snapshot())  # w1 vanished with the call
    assert metrics.outcomes() == {("kit", "echo", "lost"): 1}


def test_calls_other_than_tools_are_labelled_by_method_never_by_their_uri() -> None:
    core, ports, metrics, _ = measured_router(("w1", 8))
    core.submit([call("a", 1, "kit://items/7", method="resources/read")])
    [frame] = ports.delivered_to("w1")
    core.completed("w1", [Completion(key(frame), False, 0.1)])
    assert metrics.outcomes() == {("kit", "resources/read", "ok"): 1}


def test_a_cancelled_call_is_counted_but_its_latency_is_not() -> None:
    core, ports, metrics, _ = measured_router(("w1", 8))
    core.submit([call("a", 1), call("a", 2)])
    first, second = ports.delivered_to("w1")
    core.completed(
        "w1",
        [
            Completion(key(first), False, 5.0, True, BusErrorCode.CANCELLED),
            Completion(key(second), False, 5.0, True, BusErrorCode.DEADLINE_EXCEEDED),
        ],
    )
    [tally] = metrics.tallies
    assert tally.outcomes == {("kit", "echo", "cancelled"): 1, ("kit", "echo", "timeout"): 1}
    assert len(tally.latencies_s["kit"]) == 1


@pytest.mark.parametrize(
    ("completion", "outcome"),
    [
        (Completion(("p", "c", "1"), False, 0.1), CallOutcome.OK),
        (Completion(("p", "c", "1"), False, 0.1, tool_error=True), CallOutcome.TOOL_ERROR),
        (Completion(("p", "c", "1"), False, 0.1, error_code=-32602), CallOutcome.ERROR),
        (Completion(("p", "c", "1"), True, 0.1, error_code=-32603), CallOutcome.FAULT),
        (Completion(("p", "c", "1"), False, 0.1, True, 1001), CallOutcome.TIMEOUT),
        (Completion(("p", "c", "1"), False, 0.1, True, 1005), CallOutcome.CANCELLED),
    ],
)
def test_a_completion_names_its_outcome(completion: Completion, outcome: CallOutcome) -> None:
    assert completion.outcome is outcome


def test_held_calls_a_lane_reports_ended_are_counted_with_their_outcome() -> None:
    core, _, metrics, _ = measured_router(("w1", 1))
    core.lane_held("gw-1", {"kit": (1, 0.1)}, [("kit", "echo", "cancelled")])
    core.lane_held("gw-1", {}, [("kit", "echo", "timeout"), ("kit", "lookup", "timeout")])
    outcomes: dict[tuple[str, str, str], int] = {}
    for tally in metrics.tallies:
        for label, count in tally.outcomes.items():
            outcomes[label] = outcomes.get(label, 0) + count
    assert outcomes == {
        ("kit", "echo", "cancelled"): 1,
        ("kit", "echo", "timeout"): 1,
        ("kit", "lookup", "timeout"): 1,
    }
