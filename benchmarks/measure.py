"""How every workload measures: closed loops of callers, percentiles, interleaved rounds.

A *side* is one thing being measured (raybus, or its anchor). A side's round drives a
fixed set of callers, each calling again as soon as its last call ended, for a fixed
time (a closed loop: the load adapts to the server, nothing queues unboundedly). Rounds
of the two sides alternate, and the order flips every round (raybus, anchor, anchor,
raybus, ...), so a machine that slowly gets busier or quieter weighs on both alike.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CALL_TIMEOUT_S",
    "DEFAULT_DURATION_S",
    "DEFAULT_ROUNDS",
    "Call",
    "RoundResult",
    "burst",
    "closed_loop",
    "interleaved",
    "is_error_result",
    "percentile",
]

# The measurement: 6 s per side per round, 3 interleaved rounds.
DEFAULT_DURATION_S = 6.0
DEFAULT_ROUNDS = 3
# One call is bounded so a stuck server ends a round instead of hanging the bench.
CALL_TIMEOUT_S = 120.0

Call = Callable[[], Awaitable[object]]


def percentile(samples: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` in 0..1); ``None`` without samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def is_error_result(result: object) -> bool:
    """Whether an MCP ``CallToolResult`` reports a tool error (``isError``)."""
    return bool(getattr(result, "is_error", False))


@dataclass
class RoundResult:
    """What one round of one side did: successful call latencies, errors, elapsed time."""

    elapsed_s: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.calls / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "elapsed_s": self.elapsed_s,
            "latencies_ms": self.latencies_ms,
            "errors": self.errors,
            "first_error": self.first_error,
            "cpu_s": self.cpu_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundResult:
        return cls(
            elapsed_s=float(data["elapsed_s"]),
            latencies_ms=[float(x) for x in data["latencies_ms"]],
            errors=int(data["errors"]),
            first_error=data.get("first_error"),
            cpu_s={k: float(v) for k, v in data.get("cpu_s", {}).items()},
        )


class _Tally:
    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.errors = 0
        self.first_error: str | None = None

    async def timed(self, call: Call) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(CALL_TIMEOUT_S):
                result = await call()
        except Exception as exc:  # noqa: BLE001 - a failed call is counted, not fatal
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        if is_error_result(result):
            self._failed(f"tool error: {getattr(result, 'content', result)}")
            return
        self.latencies_ms.append((time.perf_counter() - started) * 1000)

    def _failed(self, reason: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = reason[:300]


async def closed_loop(callers: Sequence[Call], duration_s: float) -> RoundResult:
    """Each caller calls again as soon as its call ends, until ``duration_s`` is over.

    Calls still running at the end are awaited and counted: the round's elapsed time
    runs from the first call to the last answer.
    """
    tally = _Tally()
    started = time.perf_counter()
    stop_at = started + duration_s

    async def caller(call: Call) -> None:
        while time.perf_counter() < stop_at:
            await tally.timed(call)

    await asyncio.gather(*(caller(call) for call in callers))
    return RoundResult(
        time.perf_counter() - started, tally.latencies_ms, tally.errors, tally.first_error
    )


async def burst(callers: int, calls: Sequence[Call]) -> RoundResult:
    """``calls`` shared by ``callers`` concurrent callers; elapsed = the whole burst."""
    tally = _Tally()
    queue = list(reversed(calls))
    started = time.perf_counter()

    async def caller() -> None:
        while queue:
            await tally.timed(queue.pop())

    await asyncio.gather(*(caller() for _ in range(callers)))
    return RoundResult(
        time.perf_counter() - started, tally.latencies_ms, tally.errors, tally.first_error
    )


async def interleaved(
    rounds: int, sides: dict[str, Callable[[], Awaitable[RoundResult]]]
) -> dict[str, list[RoundResult]]:
    """Run ``rounds`` rounds of every side, alternating, the order flipped each round."""
    results: dict[str, list[RoundResult]] = {name: [] for name in sides}
    order = list(sides)
    for number in range(rounds):
        for name in order if number % 2 == 0 else reversed(order):
            results[name].append(await sides[name]())
    return results
