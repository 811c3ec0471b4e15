"""cluster.insight: call timings, latency percentiles over time, the scaling history."""

from __future__ import annotations

import asyncio
from typing import Any

import mcp_types as types
import pytest

from cluster.insight import TimedCall, latency_percentiles, scaling_history, timed_tool_calls
from tests.cluster.bus_helpers import bus_config, running_bus
from transports.errors import BusErrorCode, CallError, ConnectionClosed


def timed(started: float, latency_s: float, error: str | None = None, index: int = 0) -> TimedCall:
    return TimedCall(index, started, started + latency_s, error)


def test_calls_are_binned_by_when_their_answer_arrived() -> None:
    timings = [timed(100.0, 0.2), timed(100.0, 0.9), timed(100.5, 1.0), timed(100.0, 3.1)]

    bins = latency_percentiles(timings, bin_s=1.0, percentiles=(50, 100))

    assert [(b.start_s, b.completed) for b in bins] == [(0.0, 2), (1.0, 1), (3.0, 1)]
    assert bins[0].percentiles_ms == pytest.approx({50: 200.0, 100: 900.0})
    assert bins[1].percentiles_ms == pytest.approx({50: 1000.0, 100: 1000.0})


def test_percentiles_are_nearest_rank_over_the_successful_calls_only() -> None:
    ok = [timed(0.0, latency / 1000) for latency in range(1, 101)]  # 1..100 ms, all in bin 0
    failures = [timed(0.0, 0.05, error="1002 overloaded") for _ in range(7)]

    (only,) = latency_percentiles(ok + failures, bin_s=10.0, percentiles=(1, 50, 95, 99, 100))

    assert only.completed == 107
    assert only.failed == 7
    assert only.percentiles_ms == pytest.approx({1: 1.0, 50: 50.0, 95: 95.0, 99: 99.0, 100: 100.0})


def test_a_bin_of_failures_only_has_no_percentiles() -> None:
    (only,) = latency_percentiles([timed(0.0, 0.1, error="boom")])

    assert (only.completed, only.failed, only.percentiles_ms) == (1, 1, {})


def test_the_origin_defaults_to_the_first_start_and_can_be_given() -> None:
    timings = [timed(50.0, 0.5), timed(51.0, 0.5)]

    assert [b.start_s for b in latency_percentiles(timings)] == [0.0, 1.0]
    assert [b.start_s for b in latency_percentiles(timings, origin=48.0, bin_s=0.5)] == [2.5, 3.5]


def test_no_timings_give_no_bins() -> None:
    assert latency_percentiles([]) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bin_s": 0}, "bin_s"),
        ({"percentiles": (50, 101)}, "percentiles"),
        ({"percentiles": (0,)}, "percentiles"),
    ],
)
def test_bad_bins_or_percentiles_are_refused_naming_the_argument(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        latency_percentiles([timed(0.0, 0.1)], **kwargs)


class _FakeClient:
    """Answers ``nap``-like calls after the given delay; tracks concurrency."""

    def __init__(self) -> None:
        self.running = 0
        self.most_running = 0

    async def call_tool(
        self, name: str, arguments: dict[str, Any], *, timeout_s: float
    ) -> types.CallToolResult:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(arguments.get("seconds", 0))  # the tool's own work
            if name == "overloaded":
                raise CallError(name, BusErrorCode.OVERLOADED, "the pool's queue is full")
            text = types.TextContent(type="text", text=f"{name} ran")
            return types.CallToolResult(content=[text], is_error=name == "fail")
        finally:
            self.running -= 1


async def test_every_call_is_timed_in_input_order_with_its_error() -> None:
    client = _FakeClient()
    calls = [("nap", {"seconds": 0.02}), ("overloaded", {}), ("fail", {}), ("nap", {})]

    timings = await timed_tool_calls(client, calls, concurrency=4)  # type: ignore[arg-type]

    assert [t.index for t in timings] == [0, 1, 2, 3]
    assert timings[0].error is None
    assert timings[0].latency_s >= 0.02
    assert timings[1].error is not None
    assert "1002" in timings[1].error
    assert timings[2].error == "tool error: fail ran"
    assert timings[3].error is None
    assert all(t.ended >= t.started for t in timings)


async def test_at_most_concurrency_calls_run_at_once() -> None:
    client = _FakeClient()

    await timed_tool_calls(client, [("nap", {"seconds": 0.01})] * 40, concurrency=5)  # type: ignore[arg-type]

    assert client.most_running == 5


async def test_a_concurrency_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        await timed_tool_calls(_FakeClient(), [], concurrency=0)  # type: ignore[arg-type]


@pytest.mark.ray
async def test_the_history_of_a_missing_bus_pool_or_autoscaler_is_a_clear_error(
    ray_session: None,
) -> None:
    with pytest.raises(ConnectionClosed, match="no bus named 'no-such-bus'"):
        await scaling_history("no-such-bus")

    config = bus_config([{"name": "kit", "server": "cluster.examples.testkit:server"}])
    async with running_bus(config):
        with pytest.raises(ValueError, match=r"no pool 'nope'.*'kit'"):
            await scaling_history(config.name, pool="nope")
        with pytest.raises(ConnectionClosed, match="without an autoscaler"):
            await scaling_history(config.name, pool="kit")
    with pytest.raises(ValueError, match="last"):
        await scaling_history(config.name, last=0)
