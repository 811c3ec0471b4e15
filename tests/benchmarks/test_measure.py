"""Closed loops, bursts, interleaving and percentiles: what every figure is made of."""

from __future__ import annotations

import asyncio
import itertools

import mcp_types as types
import pytest

from benchmarks.measure import RoundResult, burst, closed_loop, interleaved, percentile


@pytest.mark.parametrize(
    ("fraction", "expected"), [(0.0, 1.0), (0.5, 50.0), (0.99, 99.0), (1.0, 100.0)]
)
def test_percentiles_are_nearest_rank(fraction: float, expected: float) -> None:
    samples = [float(n) for n in range(100, 0, -1)]  # unordered on purpose

    assert percentile(samples, fraction) == expected


def test_no_samples_have_no_percentile() -> None:
    assert percentile([], 0.5) is None


async def test_a_closed_loop_counts_raised_errors_and_tool_errors_apart_from_successes() -> None:
    outcomes = itertools.cycle(["ok", "raise", "tool error"])

    async def call() -> object:
        await asyncio.sleep(0)
        outcome = next(outcomes)
        if outcome == "raise":
            raise ConnectionError("gone")
        return types.CallToolResult(content=[], is_error=outcome == "tool error")

    result = await closed_loop([call, call], duration_s=0.05)

    assert result.calls > 0
    assert result.errors > 0
    assert abs(result.calls * 2 - result.errors) <= 2  # one success per two failures
    assert result.first_error is not None
    assert "ConnectionError: gone" in result.first_error or "tool error" in result.first_error


async def test_a_burst_makes_every_call_once_with_at_most_the_callers_in_flight() -> None:
    running, most, made = 0, 0, []

    def numbered(n: int) -> object:
        async def call() -> int:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0)
            running -= 1
            made.append(n)
            return n

        return call

    result = await burst(3, [numbered(n) for n in range(10)])  # type: ignore[misc]

    assert sorted(made) == list(range(10))
    assert result.calls == 10
    assert most == 3


async def test_interleaved_rounds_alternate_the_sides_and_flip_their_order() -> None:
    order: list[str] = []

    def side(name: str) -> object:
        async def one_round() -> RoundResult:
            order.append(name)
            return RoundResult(elapsed_s=1.0)

        return one_round

    results = await interleaved(3, {"raybus": side("raybus"), "anchor": side("anchor")})  # type: ignore[dict-item]

    assert order == ["raybus", "anchor", "anchor", "raybus", "raybus", "anchor"]
    assert {name: len(r) for name, r in results.items()} == {"raybus": 3, "anchor": 3}


def test_a_round_survives_its_trip_through_json_between_processes() -> None:
    result = RoundResult(2.0, [1.0, 3.0], errors=1, first_error="x", cpu_s={"loadgen": 0.5})

    again = RoundResult.from_dict(result.as_dict())

    assert again == result
    assert again.rate == 1.0
