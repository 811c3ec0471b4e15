"""The direct lane's client half with fake actors: what it sends where, and what it does
when a worker bounces, dies or never answers (the real-Ray side: test_direct_lane)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from actors.worker.direct import DirectOutcome
from cluster.backends import ray_direct
from cluster.backends.lane_queue import HeldEnd, HeldRows
from cluster.backends.ray_direct import MEMBERSHIP_REFRESH_S, DirectLane
from cluster.naming import HandleCache
from tests.actors.test_router import call, registry_with
from tests.waiting import wait_until
from transports.errors import BusErrorCode
from transports.frame import Frame
from transports.message import Response


class _Remote:
    """``handle.method.remote(...)`` answering with what ``answer`` returns (awaited)."""

    def __init__(self, answer: Callable[..., Any]) -> None:
        self._answer = answer
        self.calls: list[tuple[Any, ...]] = []

    def remote(self, *args: Any) -> Any:
        self.calls.append(args)
        return asyncio.ensure_future(self._answer(*args))


class _Discovery:
    def __init__(self, *workers: tuple[str, int]) -> None:
        self.membership = registry_with(*workers).snapshot()

        async def since(epoch: str, version: int) -> Any:
            current = self.membership
            return None if (epoch, version) == (current.epoch, current.version) else current

        self.snapshot_since = _Remote(since)


class _Worker:
    def __init__(self, outcome: Callable[[list[Frame]], Any]) -> None:
        self.call = _Remote(outcome)
        self.cancel = _Remote(self._cancelled)
        self.collect = _Remote(self._never)

    async def _cancelled(self, keys: list[Any]) -> None:
        return None

    async def _never(self, keys: list[Any]) -> DirectOutcome:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def _answers(frames: list[Frame]) -> list[Frame]:
    return [Frame.of(f.envelope, Response.success(1, {"content": []})) for f in frames]


class _Harness:
    def __init__(
        self, discovery: _Discovery, workers: dict[str, _Worker], *, max_held: int | None = None
    ) -> None:
        self.handed: list[Frame] = []
        self.routed: list[Frame] = []
        # What the router heard of held calls; None: a lane that holds nothing.
        self.reports: list[tuple[HeldRows, list[HeldEnd]]] = []
        handles = HandleCache()
        for name, worker in workers.items():
            handles.put(name, worker)
        holding: dict[str, Any] = {}
        if max_held is not None:
            holding = {"report_held": self._heard, "max_held_per_pool": max_held}
        self.lane = DirectLane(
            discovery, self._hand, self.routed.extend, handles, grace_s=0.2, **holding
        )

    def _heard(self, rows: HeldRows, ended: list[HeldEnd]) -> None:
        self.reports.append((rows, ended))

    async def _hand(self, frames: list[Frame]) -> None:
        self.handed.extend(frames)

    async def ready(self) -> None:
        self.lane.take([])
        await wait_until(lambda: self.lane._membership is not None)

    def codes(self) -> list[int | None]:
        codes: list[int | None] = []
        for frame in self.handed:
            message = frame.decode()
            assert isinstance(message, Response)
            codes.append(message.error.code if message.error is not None else None)
        return codes


async def test_before_it_knows_the_workers_every_call_takes_the_router() -> None:
    harness = _Harness(_Discovery(("w1", 4)), {})
    frames = [call("a", 1)]
    assert harness.lane.take(frames) == frames


async def test_calls_go_to_the_worker_with_the_fewest_of_this_clients_calls() -> None:
    async def answer(frames: list[Frame]) -> DirectOutcome:
        return DirectOutcome(_answers(frames))

    w1, w2 = _Worker(answer), _Worker(answer)
    harness = _Harness(_Discovery(("w1", 2), ("w2", 2)), {"w1": w1, "w2": w2})
    await harness.ready()
    calls = [call("a", n) for n in range(5)]
    # Two each fill both workers' capacity as this client sees it: the fifth is the router's.
    assert harness.lane.take(calls) == calls[4:]
    await wait_until(lambda: len(harness.handed) == 4)
    assert [len(args[0]) for args in w1.call.calls + w2.call.calls] == [2, 2]
    assert harness.codes() == [None] * 4
    # Other methods never go directly.
    read = call("a", 9, method="resources/read")
    assert harness.lane.take([read]) == [read]


async def test_what_a_worker_bounces_goes_to_the_router() -> None:
    async def full(frames: list[Frame]) -> DirectOutcome:
        return DirectOutcome([], bounced=frames)

    harness = _Harness(_Discovery(("w1", 4)), {"w1": _Worker(full)})
    await harness.ready()
    frames = [call("a", 1), call("a", 2)]
    assert harness.lane.take(frames) == []
    await wait_until(lambda: len(harness.routed) == 2)
    assert harness.handed == []
    # They are the router's now: a cancel goes there, and the worker's slots are free
    # again in this client's count (else each bounce would shrink its direct lane).
    keys = [f.envelope.correlation_key for f in frames]
    assert harness.lane.cancel(keys) == keys
    assert harness.lane._outstanding == {}


async def test_a_worker_lost_mid_call_fails_its_calls_as_may_have_run() -> None:
    async def dies(frames: list[Frame]) -> DirectOutcome:
        raise RuntimeError("actor died")

    harness = _Harness(_Discovery(("w1", 4)), {"w1": _Worker(dies)})
    await harness.ready()
    assert harness.lane.take([call("a", 1)]) == []
    await wait_until(lambda: len(harness.handed) == 1)
    assert harness.codes() == [BusErrorCode.OUTCOME_UNKNOWN]


async def test_a_call_held_past_its_deadline_is_answered_and_cancelled_and_its_slot_kept() -> None:
    async def wedged(frames: list[Frame]) -> DirectOutcome:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    worker = _Worker(wedged)
    harness = _Harness(_Discovery(("w1", 1)), {"w1": worker})
    await harness.ready()
    held = call("a", 1)
    held = Frame(replace(held.envelope, deadline_unix_s=time.time() + 0.1), held.body)
    assert harness.lane.take([held]) == []
    await wait_until(lambda: len(harness.handed) == 1, timeout_s=30)
    assert harness.codes() == [BusErrorCode.DEADLINE_EXCEEDED]
    await wait_until(lambda: len(worker.cancel.calls) == 1)
    # The worker still holds it: this client sends it nothing more.
    following = call("a", 2)
    assert harness.lane.take([following]) == [following]
    await harness.lane.close()


async def test_membership_is_read_again_only_after_the_refresh_period_and_only_if_newer() -> None:
    discovery = _Discovery(("w1", 4))
    harness = _Harness(discovery, {})
    await harness.ready()
    assert len(discovery.snapshot_since.calls) == 1
    harness.lane.take([])
    assert len(discovery.snapshot_since.calls) == 1  # within the period: not asked
    harness.lane._read_at -= MEMBERSHIP_REFRESH_S
    harness.lane.take([])
    await wait_until(lambda: len(discovery.snapshot_since.calls) == 2)
    known = harness.lane._membership
    assert known is not None
    assert discovery.snapshot_since.calls[1] == (known.epoch, known.version)


class _Gated:
    """A worker that answers each call when the test lets it: ``release(n)``."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self._gates: list[asyncio.Event] = []

    async def __call__(self, frames: list[Frame]) -> DirectOutcome:
        gates = []
        for frame in frames:
            self.received.append(str(frame.envelope.request_id))
            gates.append(asyncio.Event())
        self._gates.extend(gates)
        for gate in gates:
            await gate.wait()
        return DirectOutcome(_answers(frames))

    def release(self, count: int = 1) -> None:
        waiting = [gate for gate in self._gates if not gate.is_set()]
        for gate in waiting[:count]:
            gate.set()


async def test_calls_past_the_free_slots_wait_in_the_lane_and_take_each_slot_in_order() -> None:
    gated = _Gated()
    harness = _Harness(_Discovery(("w1", 1)), {"w1": _Worker(gated)}, max_held=100)
    await harness.ready()
    calls = [call("a", n) for n in range(4)]
    assert harness.lane.take(calls) == []  # none to the router
    await wait_until(lambda: gated.received == ["0"])
    # The router hears what waits here, for the pool's lag.
    await wait_until(lambda: any(rows.get("kit", (0, 0))[0] == 3 for rows, _ in harness.reports))
    for served in range(1, 4):
        gated.release()
        await wait_until(lambda n=served: len(gated.received) == n + 1)  # type: ignore[misc]
    gated.release()
    await wait_until(lambda: len(harness.handed) == 4)
    assert gated.received == ["0", "1", "2", "3"]  # arrival order
    assert harness.routed == []
    await wait_until(lambda: harness.reports[-1] == ({}, []))  # nothing held any more
    await harness.lane.close()


async def test_a_new_call_waits_behind_the_held_ones_even_if_a_slot_is_free_this_turn() -> None:
    gated = _Gated()
    harness = _Harness(_Discovery(("w1", 1)), {"w1": _Worker(gated)}, max_held=100)
    await harness.ready()
    first = call("a", 1)
    assert harness.lane.take([first, call("a", 2)]) == []
    await wait_until(lambda: gated.received == ["1"])
    # The first call's slot frees, and in the same turn (before the held call is sent
    # on) a newcomer arrives: it must not take the slot the held call waited for.
    harness.lane._settle(first.envelope.correlation_key)
    assert harness.lane.take([call("a", 3)]) == []
    await wait_until(lambda: len(gated.received) == 2)
    assert gated.received == ["1", "2"]
    assert len(harness.lane._held) == 1
    await harness.lane.close()


async def test_past_the_lanes_bound_calls_go_to_the_router() -> None:
    gated = _Gated()
    harness = _Harness(_Discovery(("w1", 1)), {"w1": _Worker(gated)}, max_held=2)
    await harness.ready()
    calls = [call("a", n) for n in range(5)]
    assert harness.lane.take(calls) == calls[3:]  # one sent, two held
    for served in range(1, 4):
        await wait_until(lambda n=served: len(gated.received) == n)  # type: ignore[misc]
        gated.release()
    await wait_until(lambda: len(harness.handed) == 3)
    assert gated.received == ["0", "1", "2"]
    await harness.lane.close()


async def test_a_held_call_past_its_deadline_is_answered_in_the_lane_and_reported() -> None:
    gated = _Gated()
    harness = _Harness(_Discovery(("w1", 1)), {"w1": _Worker(gated)}, max_held=100)
    await harness.ready()
    late = call("a", 2)
    late = Frame(replace(late.envelope, deadline_unix_s=time.time() + 0.2), late.body)
    assert harness.lane.take([call("a", 1), late]) == []
    await wait_until(lambda: len(harness.handed) == 1, timeout_s=30)
    assert harness.codes() == [BusErrorCode.DEADLINE_EXCEEDED]
    assert harness.handed[0].envelope.request_id == "2"
    await wait_until(lambda: any(e == [("kit", "echo", "timeout")] for _, e in harness.reports))
    gated.release()
    await wait_until(lambda: len(harness.handed) == 2)
    assert gated.received == ["1"]  # the expired call never reached the worker
    await harness.lane.close()


async def test_a_cancelled_held_call_goes_nowhere_and_the_router_counts_it() -> None:
    gated = _Gated()
    harness = _Harness(_Discovery(("w1", 1)), {"w1": _Worker(gated)}, max_held=100)
    await harness.ready()
    held = call("a", 2)
    assert harness.lane.take([call("a", 1), held]) == []
    assert harness.lane.cancel([held.envelope.correlation_key]) == []  # not the router's
    await wait_until(lambda: any(e == [("kit", "echo", "cancelled")] for _, e in harness.reports))
    gated.release()
    await wait_until(lambda: len(harness.handed) == 1)
    assert harness.reports[-1][0] == {}
    assert gated.received == ["1"]
    await harness.lane.close()


async def test_held_calls_go_to_a_worker_that_joins_the_pool() -> None:
    first, second = _Gated(), _Gated()
    discovery = _Discovery(("w1", 1))
    harness = _Harness(discovery, {"w1": _Worker(first), "w2": _Worker(second)}, max_held=100)
    await harness.ready()
    assert harness.lane.take([call("a", 1), call("a", 2)]) == []
    await wait_until(lambda: first.received == ["1"])
    discovery.membership = registry_with(("w1", 1), ("w2", 1)).snapshot()
    harness.lane._read_at -= MEMBERSHIP_REFRESH_S  # the lane reads it at its next tick
    await wait_until(lambda: second.received == ["2"], timeout_s=30)
    first.release()
    second.release()
    await wait_until(lambda: len(harness.handed) == 2)
    await harness.lane.close()


async def test_calls_held_when_the_lane_closes_go_to_the_router() -> None:
    gated = _Gated()
    harness = _Harness(_Discovery(("w1", 1)), {"w1": _Worker(gated)}, max_held=100)
    await harness.ready()
    calls = [call("a", n) for n in range(3)]
    assert harness.lane.take(calls) == []
    await harness.lane.close()
    assert harness.routed == calls[1:]


async def test_held_calls_go_to_the_router_when_a_worker_bounces_them_back() -> None:
    async def full(frames: list[Frame]) -> DirectOutcome:
        return DirectOutcome([], bounced=frames)

    worker = _Worker(full)
    harness = _Harness(_Discovery(("w1", 1)), {"w1": worker}, max_held=100)
    await harness.ready()
    calls = [call("a", n) for n in range(3)]
    assert harness.lane.take(calls) == []
    await wait_until(lambda: len(harness.routed) == 3)
    # The router decides for a worker that says no (full of other clients' calls, its
    # breaker not closed): every call reaches it, none is lost or answered here.
    assert sorted(f.envelope.request_id for f in harness.routed) == ["0", "1", "2"]
    assert harness.handed == []
    await harness.lane.close()


async def test_held_calls_are_not_sent_to_a_worker_just_lost() -> None:
    async def dies(frames: list[Frame]) -> DirectOutcome:
        raise RuntimeError("actor died")

    worker = _Worker(dies)
    harness = _Harness(_Discovery(("w1", 1)), {"w1": worker}, max_held=100)
    # Its name still resolves for a moment after it died (Ray's directory is not quick).
    harness.lane._handles.forget = lambda name: None  # type: ignore[method-assign]
    await harness.ready()
    held = call("a", 2)
    assert harness.lane.take([call("a", 1), held]) == []
    await wait_until(lambda: harness.routed == [held])
    assert harness.codes() == [BusErrorCode.OUTCOME_UNKNOWN]  # the first call only
    assert len(worker.call.calls) == 1
    await harness.lane.close()


async def test_held_calls_do_not_wait_for_a_slot_an_overdue_call_keeps() -> None:
    async def wedged(frames: list[Frame]) -> DirectOutcome:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    harness = _Harness(_Discovery(("w1", 1)), {"w1": _Worker(wedged)}, max_held=100)
    await harness.ready()
    stuck = call("a", 1)
    stuck = Frame(replace(stuck.envelope, deadline_unix_s=time.time() + 0.1), stuck.body)
    no_deadline = call("a", 2)
    assert harness.lane.take([stuck, no_deadline]) == []
    # The worker keeps the first past its deadline: it is answered 1001 and its slot
    # stays counted, so the second, which has no deadline, would wait forever here.
    await wait_until(lambda: harness.routed == [no_deadline], timeout_s=30)
    assert harness.codes() == [BusErrorCode.DEADLINE_EXCEEDED]
    later = call("a", 3)
    assert harness.lane.take([later]) == [later]
    await harness.lane.close()


async def test_held_calls_go_to_the_router_when_the_membership_cannot_be_read() -> None:
    gated = _Gated()
    discovery = _Discovery(("w1", 1))
    harness = _Harness(discovery, {"w1": _Worker(gated)}, max_held=100)
    await harness.ready()
    held = call("a", 2)
    assert harness.lane.take([call("a", 1), held]) == []

    async def unreachable(epoch: str, version: int) -> Any:
        raise RuntimeError("discovery is gone")

    discovery.snapshot_since = _Remote(unreachable)
    harness.lane._read_at -= MEMBERSHIP_REFRESH_S  # read again at the next tick
    await wait_until(lambda: harness.routed == [held], timeout_s=30)
    gated.release()
    await wait_until(lambda: len(harness.handed) == 1)
    await harness.lane.close()


async def test_a_worker_closed_to_direct_calls_is_skipped_until_the_membership_is_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []
    breaker = {"open": True}

    async def worker(frames: list[Frame]) -> DirectOutcome:
        sent.extend(str(f.envelope.request_id) for f in frames)
        if breaker["open"]:
            return DirectOutcome([], bounced=frames, closed=True)
        return DirectOutcome(_answers(frames))

    harness = _Harness(_Discovery(("w1", 4)), {"w1": _Worker(worker)})
    await harness.ready()
    assert harness.lane.take([call("a", 1)]) == []
    await wait_until(lambda: len(harness.routed) == 1)
    # Its pool's breaker is open: the next call goes to the router at once, without a
    # direct attempt the worker would only bounce.
    later = call("a", 2)
    assert harness.lane.take([later]) == [later]
    assert sent == ["1"]
    # Once the membership is read again it is tried again (the breaker may have closed).
    breaker["open"] = False
    monkeypatch.setattr(ray_direct, "MEMBERSHIP_REFRESH_S", 0.0)
    harness.lane.take([])
    await wait_until(lambda: not harness.lane._closed_workers)
    assert harness.lane.take([call("a", 3)]) == []
    await wait_until(lambda: len(harness.handed) == 1)
    assert sent == ["1", "3"]
    await harness.lane.close()
