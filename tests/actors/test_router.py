"""Router logic with fake ports: routing, balancing, queue, deadlines, loss, retire."""

from __future__ import annotations

from typing import Any

import pytest

from actors.discovery.catalog import Catalog
from actors.discovery.registry import DiscoveryRegistry, Heartbeat, ServerStatus
from actors.router.breaker import BreakerConfig, BreakerState
from actors.router.core import Completion, RouterConfig, RouterCore
from actors.router.lanes import LANE_SILENCE_S
from actors.router.routing import tried_once
from tests.actors.fakes import FakeClock, RecordingRouterPorts
from transports.envelope import Envelope
from transports.errors import BusErrorCode
from transports.frame import Frame
from transports.message import Request, Response

CATALOG = Catalog.of(
    tools=[
        {"name": "echo", "inputSchema": {"type": "object"}},
        {
            "name": "lookup",
            "inputSchema": {"type": "object"},
            "annotations": {"readOnlyHint": True},
        },
    ],
    resources=[{"uri": "kit://a", "name": "a"}],
    resource_templates=[{"uriTemplate": "kit://items/{id}", "name": "item"}],
    prompts=[{"name": "summarize"}],
)


def registry_with(
    *workers: tuple[str, int], status: ServerStatus = ServerStatus.ONLINE
) -> DiscoveryRegistry:
    registry = DiscoveryRegistry(ttl_s=5, clock=FakeClock())
    for name, capacity in workers:
        registry.heartbeat(
            Heartbeat(name, "kit", name, status, 0, CATALOG.digest, capacity, CATALOG)
        )
    return registry


def router(
    *workers: tuple[str, int], **config: Any
) -> tuple[RouterCore, RecordingRouterPorts, FakeClock]:
    ports = RecordingRouterPorts()
    clock = FakeClock()
    core = RouterCore(RouterConfig(**config), ports, clock=clock, wall_clock=clock)
    core.apply_membership(registry_with(*workers).snapshot())
    return core, ports, clock


def call(
    client: str,
    n: int,
    tool: str = "echo",
    *,
    deadline: float | None = None,
    method: str = "tools/call",
) -> Frame:
    envelope = Envelope(
        client_id=client,
        request_id=str(n),
        reply_to=f"ep-{client}",
        method=method,
        name=tool,
        deadline_unix_s=deadline,
    )
    return Frame.of(envelope, Request(id=n, method=method, params={"name": tool}))


def error_code(frame: Frame) -> int | None:
    message = frame.decode()
    assert isinstance(message, Response)
    return message.error.code if message.error else None


def test_calls_go_to_the_pool_that_serves_the_name() -> None:
    core, ports, _ = router(("w1", 4))
    core.submit(
        [
            call("a", 1),
            call("a", 2, "kit://items/7", method="resources/read"),
            call("a", 3, "summarize", method="prompts/get"),
        ]
    )
    assert len(ports.delivered_to("w1")) == 3
    assert not ports.replies


def test_unknown_names_and_unrouted_methods_are_answered_with_clear_errors() -> None:
    core, ports, _ = router(("w1", 4))
    core.submit([call("a", 1, "nope"), call("a", 2, "x", method="tools/list")])
    assert [error_code(f) for f in ports.replies] == [-32602, -32601]
    assert ports.replies[0].envelope.client_id == "a"


def test_least_outstanding_balances_a_batch_evenly() -> None:
    core, ports, _ = router(("w1", 10), ("w2", 10))
    core.submit([call("a", i) for i in range(10)])
    assert len(ports.delivered_to("w1")) == 5
    assert len(ports.delivered_to("w2")) == 5


def test_calls_beyond_capacity_queue_and_count_as_lag_until_a_slot_frees() -> None:
    core, ports, clock = router(("w1", 2))
    core.submit([call("a", i) for i in range(5)])
    assert len(ports.delivered_to("w1")) == 2
    clock.advance(1.5)
    lag = core.lag()["kit"]
    assert (lag.queued, lag.in_flight, lag.capacity) == (3, 2, 2)
    assert lag.oldest_age_s == pytest.approx(1.5)
    first = ports.delivered_to("w1")[0].envelope.correlation_key
    core.completed("w1", [Completion(first, False, 0.1)])
    assert len(ports.delivered_to("w1")) == 3
    assert core.lag()["kit"].queued == 2


def test_the_lag_counts_what_clients_lanes_hold_until_they_say_otherwise_or_fall_silent() -> None:
    core, _, clock = router(("w1", 2))
    core.submit([call("a", i) for i in range(3)])  # one queued here
    core.lane_held("gw-1", {"kit": (5, 0.5)}, [])
    core.lane_held("gw-2", {"kit": (2, 2.0)}, [("kit", "echo", "cancelled")])
    clock.advance(0.25)
    lag = core.lag()["kit"]
    assert lag.queued == 1 + 5 + 2
    # The oldest held call has aged since its lane reported it.
    assert lag.oldest_age_s == pytest.approx(2.25)
    core.lane_held("gw-2", {}, [])  # it holds nothing now
    assert core.lag()["kit"].queued == 1 + 5
    clock.advance(LANE_SILENCE_S + 0.1)  # gw-1 closed or died without a word
    assert core.lag()["kit"].queued == 1


def test_the_lag_counts_calls_workers_finished_but_not_abandoned_or_foreign_ones() -> None:
    core, ports, _ = router(("w1", 4))
    core.submit([call("a", i) for i in range(4)])
    keys = [f.envelope.correlation_key for f in ports.delivered_to("w1")]
    assert core.lag()["kit"].completed == 0
    core.completed("w1", [Completion(keys[0], False, 0.1), Completion(keys[1], True, 0.1)])
    core.completed("w1", [Completion(keys[2], False, 0.1, abandoned=True)])
    core.completed("w2", [Completion(keys[3], False, 0.1)])  # not the worker it went to
    core.completed("w1", [Completion(keys[0], False, 0.1)])  # already finished
    assert core.lag()["kit"].completed == 2


def test_a_word_from_another_worker_does_not_end_a_call_in_flight() -> None:
    core, ports, _ = router(("w1", 1), ("w2", 1))
    core.submit([call("a", 1), call("a", 2), call("a", 3)])
    running = ports.delivered_to("w1")[0].envelope.correlation_key
    core.completed("w2", [Completion(running, False, 0.1)])  # stale, e.g. a lost worker's
    assert core.lag()["kit"].in_flight == 2
    core.completed("w1", [Completion(running, False, 0.1)])
    # w1's slot is free again: the queued call went to it.
    assert len(ports.delivered_to("w1")) == 2
    assert core.lag()["kit"].completed == 1


def test_a_full_queue_rejects_with_overloaded_and_a_retry_hint() -> None:
    core, ports, _ = router(("w1", 1), max_pending_per_pool=2)
    core.submit([call("a", i) for i in range(4)])
    assert [error_code(f) for f in ports.replies] == [BusErrorCode.OVERLOADED]


def test_the_same_key_twice_in_flight_is_refused_but_other_clients_may_reuse_the_id() -> None:
    core, ports, _ = router(("w1", 4))
    core.submit([call("a", 1), call("a", 1), call("b", 1)])
    assert [error_code(f) for f in ports.replies] == [-32600]
    assert len(ports.delivered_to("w1")) == 2


def test_queued_calls_past_their_deadline_are_answered_by_the_router() -> None:
    core, ports, clock = router(("w1", 1))
    core.submit([call("a", 1), call("a", 2, deadline=clock.now + 1)])
    clock.advance(2)
    core.tick()
    assert [error_code(f) for f in ports.replies] == [BusErrorCode.DEADLINE_EXCEEDED]
    assert core.lag()["kit"].queued == 0


def test_a_call_its_worker_holds_past_the_deadline_is_answered_and_cancelled_once() -> None:
    core, ports, clock = router(("w1", 1), overdue_grace_s=2)
    running, queued = call("a", 1, deadline=clock.now + 1), call("a", 2, deadline=clock.now + 60)
    core.submit([running, queued])
    key = running.envelope.correlation_key
    clock.advance(2.9)  # past the deadline, within the grace: the worker may still answer
    core.tick()
    assert not ports.replies
    clock.advance(0.2)
    core.tick()
    core.tick()
    assert [(f.envelope.request_id, error_code(f)) for f in ports.replies] == [
        ("1", BusErrorCode.DEADLINE_EXCEEDED)
    ]
    assert ports.cancelled == [("w1", [key])]
    # The slot stays busy until the worker lets go of the call; then the next call runs.
    assert ports.delivered_to("w1") == [running]
    core.completed("w1", [Completion(key, False, 3.0)])
    assert ports.delivered_to("w1") == [running, queued]
    assert len(ports.replies) == 1  # the late completion answers nobody twice


def test_a_lost_worker_answers_nobody_twice_for_a_call_already_answered_overdue() -> None:
    core, ports, clock = router(("w1", 1), ("w2", 1), overdue_grace_s=1)
    core.submit([call("a", 1, "lookup", deadline=clock.now + 1)])
    ((holder, _),) = ports.delivered
    other = "w2" if holder == "w1" else "w1"
    clock.advance(2.5)
    core.tick()
    assert len(ports.replies) == 1
    core.apply_membership(registry_with((other, 1)).snapshot())  # the holder vanished
    assert len(ports.replies) == 1
    assert not ports.delivered_to(other)  # not re-run (though read-only): it was answered
    assert core.lag()["kit"].in_flight == 0


def test_cancel_drops_queued_calls_and_forwards_for_running_ones() -> None:
    core, ports, _ = router(("w1", 1))
    running, queued = call("a", 1), call("a", 2)
    core.submit([running, queued])
    core.cancel([running.envelope.correlation_key, queued.envelope.correlation_key])
    assert ports.cancelled == [("w1", [running.envelope.correlation_key])]
    assert core.lag()["kit"].queued == 0


def test_a_lost_worker_requeues_safe_calls_and_answers_unsafe_ones_as_unknown() -> None:
    core, ports, _ = router(("w1", 4), ("w2", 4))
    core.submit(
        [call("a", 1, "echo"), call("a", 2, "lookup"), call("a", 3, "echo"), call("a", 4, "lookup")]
    )
    on_w1 = ports.delivered_to("w1")
    core.apply_membership(registry_with(("w2", 4)).snapshot())
    unsafe = [f for f in on_w1 if f.envelope.name == "echo"]
    assert sorted(f.envelope.request_id for f in ports.replies) == sorted(
        f.envelope.request_id for f in unsafe
    )
    assert all(error_code(f) == BusErrorCode.OUTCOME_UNKNOWN for f in ports.replies)
    safe = {f.envelope.request_id for f in on_w1 if f.envelope.name == "lookup"}
    assert safe <= {f.envelope.request_id for f in ports.delivered_to("w2")}


def test_a_safe_call_a_client_already_ran_once_is_not_retried_again() -> None:
    # The direct lane re-sends a safe call whose worker it lost, marked as run once: the
    # router's one retry is then used up, so a request killing every worker runs twice.
    core, ports, _ = router(("w1", 4), ("w2", 4))
    core.submit([tried_once(call("a", 1, "lookup"), "w0"), call("a", 2, "lookup")])
    first = {f.envelope.request_id: w for w in ("w1", "w2") for f in ports.delivered_to(w)}
    core.apply_membership(registry_with(("w3", 4)).snapshot())  # both workers lost
    assert [f.envelope.request_id for f in ports.replies if error_code(f)] == ["1"]
    assert error_code(ports.replies[0]) == BusErrorCode.OUTCOME_UNKNOWN
    assert [f.envelope.request_id for f in ports.delivered_to("w3")] == ["2"]  # retried once
    assert set(first) == {"1", "2"}


def test_a_call_lost_on_a_worker_the_router_still_lists_is_not_sent_back_to_it() -> None:
    # The client noticed the worker died before the router did: the router must not spend
    # the call's one retry there, even with that worker's slots free, but wait for another.
    core, ports, _ = router(("w1", 4), ("w2", 1))
    core.submit([tried_once(call("a", 1, "lookup"), "w1")])
    core.submit([tried_once(call("a", 2, "lookup"), "w1")])
    assert not ports.delivered_to("w1")
    assert [f.envelope.request_id for f in ports.delivered_to("w2")] == ["1"]
    assert core.lag()["kit"].queued == 1  # waits for w2's one slot
    first = ports.delivered_to("w2")[0].envelope.correlation_key
    core.completed("w2", [Completion(first, True, 0.1)])
    assert [f.envelope.request_id for f in ports.delivered_to("w2")] == ["1", "2"]
    assert not ports.delivered_to("w1")


def test_a_call_lost_on_the_only_worker_of_its_pool_may_go_back_to_it() -> None:
    core, ports, _ = router(("w1", 4))
    core.submit([tried_once(call("a", 1, "lookup"), "w1")])
    assert [f.envelope.request_id for f in ports.delivered_to("w1")] == ["1"]


def test_a_retired_worker_gets_nothing_new_and_reports_what_it_was_sent() -> None:
    core, ports, _ = router(("w1", 4), ("w2", 4))
    core.submit([call("a", i) for i in range(4)])
    sent = core.retire("w1")
    assert sent == len(ports.delivered_to("w1"))
    core.submit([call("a", i) for i in range(4, 10)])
    assert len(ports.delivered_to("w1")) == sent


def test_an_open_breaker_fails_calls_fast_and_none_reach_the_pool() -> None:
    breaker = BreakerConfig(
        minimum_calls=2, failure_rate_threshold=0.5, open_cooldown_s=5, window_s=10
    )
    core, ports, clock = router(("w1", 4), breaker=breaker)
    core.submit([call("a", 1), call("a", 2)])
    core.completed(
        "w1", [Completion(f.envelope.correlation_key, True, 0.1) for f in ports.delivered_to("w1")]
    )
    delivered = len(ports.delivered_to("w1"))
    core.submit([call("a", 3)])
    assert len(ports.delivered_to("w1")) == delivered
    assert [error_code(f) for f in ports.replies] == [BusErrorCode.CIRCUIT_OPEN]
    clock.advance(5)
    core.submit([call("a", 4)])
    assert len(ports.delivered_to("w1")) == delivered + 1  # the probe
    probe = ports.delivered_to("w1")[-1].envelope.correlation_key
    core.completed("w1", [Completion(probe, False, 0.1)])
    core.submit([call("a", 5)])
    assert len(ports.delivered_to("w1")) == delivered + 2


def test_every_worker_of_the_pool_hears_at_once_that_its_breaker_opened() -> None:
    # Workers take direct calls only while the breaker is closed; one that heard only
    # through its own reports would run direct calls past a breaker routed calls opened.
    breaker = BreakerConfig(
        minimum_calls=2, failure_rate_threshold=0.5, open_cooldown_s=5, window_s=10
    )
    core, ports, clock = router(("w1", 4), ("w2", 4), breaker=breaker)
    core.submit([call("a", 1), call("a", 2)])
    core.completed(
        "w1", [Completion(f.envelope.correlation_key, False, 0.1) for f in ports.delivered_to("w1")]
    )
    assert ports.breaker_opened_on == []  # healthy calls say nothing
    core.submit([call("a", 3), call("a", 4)])
    failed = [(w, f) for w, frames in ports.delivered for f in frames][-2:]
    for worker, frame in failed:
        core.completed(worker, [Completion(frame.envelope.correlation_key, True, 0.1)])
    assert sorted(ports.breaker_opened_on) == ["w1", "w2"]
    clock.advance(5)
    core.submit([call("a", 5)])  # the half-open probe fails: open again, said again
    probe = ports.delivered[-1]
    core.completed(probe[0], [Completion(probe[1][0].envelope.correlation_key, True, 0.1)])
    assert core.lag()["kit"].breaker is BreakerState.OPEN
    assert sorted(ports.breaker_opened_on) == ["w1", "w1", "w2", "w2"]
    # A worker that joins the pool while its breaker is not closed hears it at once.
    core.apply_membership(registry_with(("w1", 4), ("w2", 4), ("w3", 4)).snapshot())
    assert sorted(ports.breaker_opened_on) == ["w1", "w1", "w2", "w2", "w3"]


def test_calls_their_callers_abandoned_never_open_the_breaker_of_a_healthy_pool() -> None:
    # Fifty callers giving up on a never-ending tool (cancelled, or past their deadline)
    # after a long wait: slow and unanswered, but the pool did nothing wrong.
    breaker = BreakerConfig(
        minimum_calls=4,
        failure_rate_threshold=0.5,
        slow_call_threshold_s=30,
        slow_call_rate_threshold=1.0,
        window_s=1_000,
    )
    core, ports, _ = router(("w1", 100), breaker=breaker)
    core.submit([call("a", i) for i in range(50)])
    frames = ports.delivered_to("w1")
    core.cancel([f.envelope.correlation_key for f in frames[:25]])
    core.completed(
        "w1",
        [Completion(f.envelope.correlation_key, False, 100.0, abandoned=True) for f in frames],
    )
    assert core.lag()["kit"].breaker is BreakerState.CLOSED
    core.submit([call("b", 1)])
    assert ports.delivered_to("w1")[-1].envelope.client_id == "b"
    assert not ports.replies


def test_an_abandoned_half_open_probe_frees_its_slot_for_the_next_probe() -> None:
    breaker = BreakerConfig(
        minimum_calls=2, failure_rate_threshold=0.5, open_cooldown_s=5, window_s=10
    )
    core, ports, clock = router(("w1", 4), breaker=breaker)
    core.submit([call("a", 1), call("a", 2)])
    core.completed(
        "w1", [Completion(f.envelope.correlation_key, True, 0.1) for f in ports.delivered_to("w1")]
    )
    clock.advance(5)
    core.submit([call("a", 3), call("a", 4)])
    probe = ports.delivered_to("w1")[-1]
    assert probe.envelope.request_id == "3"  # one probe at a time: call 4 waits
    core.completed("w1", [Completion(probe.envelope.correlation_key, False, 0.1, abandoned=True)])
    assert ports.delivered_to("w1")[-1].envelope.request_id == "4"
    assert core.lag()["kit"].breaker is BreakerState.HALF_OPEN


def test_workers_are_asked_for_prompt_completions_only_while_the_breaker_is_not_closed() -> None:
    breaker = BreakerConfig(
        minimum_calls=2, failure_rate_threshold=0.5, open_cooldown_s=5, window_s=10
    )
    core, ports, clock = router(("w1", 4), breaker=breaker)
    assert not core.wants_prompt_completions("w1")  # healthy: completions may ride later
    core.submit([call("a", 1), call("a", 2)])
    core.completed(
        "w1", [Completion(f.envelope.correlation_key, True, 0.1) for f in ports.delivered_to("w1")]
    )
    assert core.wants_prompt_completions("w1")  # open
    clock.advance(5)
    core.submit([call("a", 3)])
    assert core.wants_prompt_completions("w1")  # half-open: the probe's news closes it
    probe = ports.delivered_to("w1")[-1].envelope.correlation_key
    core.completed("w1", [Completion(probe, False, 0.1)])
    assert not core.wants_prompt_completions("w1")
    assert not core.wants_prompt_completions("not-a-worker")
