"""What a bus did, as plain data for notebooks and reports: scaling and call timings.

::

    timings = await timed_tool_calls(client, calls, concurrency=len(calls))
    history = await scaling_history("demo", pool="kit")     # the autoscaler's record
    bins = latency_percentiles(timings, bin_s=1.0)           # p50 / p95 / p99 per second

The scaling history is the autoscaler's own decision record (one decision per pool per
autoscaler round, ``autoscaler.interval_s``), so it shows what the autoscaler saw - the
pool's size, its queued and in-flight calls - and what it decided, at the moment it
decided. The record keeps the last ``autoscaler.decisions_kept`` decisions (500: about
four minutes of one pool at the default interval). All times are wall-clock seconds
(``time.time()``), so the client's timings and the bus's decisions share one axis.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cluster.naming import actor_names, get_actor_async
from transports.errors import BusError, ConnectionClosed

if TYPE_CHECKING:
    from cluster.client import BusClient

__all__ = [
    "LatencyBin",
    "ScalingPoint",
    "TimedCall",
    "latency_percentiles",
    "scaling_history",
    "timed_tool_calls",
]


@dataclass(frozen=True, slots=True)
class ScalingPoint:
    """One autoscaler decision about one pool.

    ``workers`` is the pool's size when the decision was made (the size the supervisor
    converges to; a worker just asked for may still be starting). ``queued`` and
    ``in_flight`` are the lag signal it decided from (the router's queue on Ray, the
    consumer group's lag on Kafka, the queue depth on SQS); ``None`` when the signal was
    missing, in which case the autoscaler held the size.
    """

    wall_time: float
    pool: str
    workers: int
    desired: int
    queued: int | None
    in_flight: int | None
    oldest_age_s: float | None
    reason: str


async def scaling_history(
    bus: str, *, pool: str | None = None, last: int = 500
) -> list[ScalingPoint]:
    """The autoscaler's most recent decisions on ``bus``, oldest first.

    Args:
        bus: the bus's name.
        pool: only this pool's decisions (default: every autoscaled pool's).
        last: at most this many decisions (before filtering by pool).

    Raises:
        ConnectionClosed: no bus of that name runs, or it runs without an autoscaler.
        ValueError: ``pool`` is not a pool of that bus, or ``last`` is below 1.
    """
    if last < 1:
        raise ValueError("last must be at least 1")
    try:
        supervisor = await get_actor_async(actor_names.supervisor(bus))
    except ConnectionClosed as exc:
        raise ConnectionClosed(f"no bus named {bus!r} runs on this Ray cluster ({exc})") from None
    if pool is not None:
        pools: dict[str, int] = await supervisor.sizes.remote()
        if pool not in pools:
            raise ValueError(f"bus {bus!r} has no pool {pool!r} (its pools: {sorted(pools)})")
    try:
        autoscaler = await get_actor_async(actor_names.autoscaler(bus))
    except ConnectionClosed:
        raise ConnectionClosed(
            f"bus {bus!r} runs without an autoscaler (autoscaler.enabled is false)"
        ) from None
    decisions: list[dict[str, Any]] = await autoscaler.decisions.remote(last)
    return [_point(d) for d in decisions if pool is None or d["pool"] == pool]


def _point(decision: dict[str, Any]) -> ScalingPoint:
    signals = decision["signals"] or {}
    return ScalingPoint(
        wall_time=decision["wall_time"],
        pool=decision["pool"],
        workers=decision["current"],
        desired=decision["desired"],
        queued=signals.get("queued"),
        in_flight=signals.get("in_flight"),
        oldest_age_s=signals.get("oldest_age_s"),
        reason=decision["reason"],
    )


@dataclass(frozen=True, slots=True)
class TimedCall:
    """One tool call as the client saw it: when it was sent, when its outcome came.

    ``error`` is ``None`` for a result, else the error (a bus error such as ``1002
    overloaded``, or the tool's own error text when the result has ``isError``).
    """

    index: int
    started: float
    ended: float
    error: str | None

    @property
    def latency_s(self) -> float:
        return self.ended - self.started


async def timed_tool_calls(
    client: BusClient,
    calls: Iterable[tuple[str, dict[str, Any]]],
    *,
    concurrency: int = 64,
    timeout_s: float = 60.0,
) -> list[TimedCall]:
    """Run tool calls with at most ``concurrency`` in flight and time each one.

    A call's clock starts when it is sent (after it got one of the ``concurrency``
    slots), so its latency is the bus's, not the wait for a slot. Results in the order of
    ``calls``; a failed call is timed like the others, with its error.

    Raises:
        ValueError: ``concurrency`` is below 1.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    slots = asyncio.Semaphore(concurrency)

    async def one(index: int, name: str, arguments: dict[str, Any]) -> TimedCall:
        async with slots:
            started = time.time()
            error: str | None = None
            try:
                result = await client.call_tool(name, arguments, timeout_s=timeout_s)
                if result.is_error:
                    error = "tool error: " + " ".join(
                        getattr(block, "text", "") for block in result.content
                    )
            except BusError as exc:
                error = str(exc)
            return TimedCall(index, started, time.time(), error)

    return await asyncio.gather(*(one(i, name, args) for i, (name, args) in enumerate(calls)))


@dataclass(frozen=True, slots=True)
class LatencyBin:
    """The calls whose outcome arrived in ``[start_s, start_s + bin_s)`` after the origin.

    ``percentiles_ms`` maps each requested percentile to the latency of the calls that
    succeeded in this bin (nearest rank); it is empty when none did.
    """

    start_s: float
    completed: int
    failed: int
    percentiles_ms: dict[float, float]


def latency_percentiles(
    timings: Sequence[TimedCall],
    *,
    origin: float | None = None,
    bin_s: float = 1.0,
    percentiles: Sequence[float] = (50, 95, 99),
) -> list[LatencyBin]:
    """Latency percentiles over time: the calls binned by when their outcome arrived.

    Args:
        timings: from :func:`timed_tool_calls`.
        origin: wall-clock time of ``start_s = 0`` (default: the earliest call's start).
        bin_s: the width of a bin in seconds.
        percentiles: which percentiles, each in (0, 100].

    Returns:
        One bin per ``bin_s`` in which at least one call ended, in time order.

    Raises:
        ValueError: ``bin_s`` is not positive or a percentile is outside (0, 100].
    """
    if not bin_s > 0:
        raise ValueError("bin_s must be positive")
    if any(not 0 < p <= 100 for p in percentiles):
        raise ValueError(f"percentiles must lie in (0, 100], got {list(percentiles)}")
    if not timings:
        return []
    zero = min(t.started for t in timings) if origin is None else origin
    grouped: dict[int, list[TimedCall]] = {}
    for timing in timings:
        grouped.setdefault(math.floor((timing.ended - zero) / bin_s), []).append(timing)
    bins = []
    for number in sorted(grouped):
        members = grouped[number]
        latencies = sorted(t.latency_s * 1000 for t in members if t.error is None)
        bins.append(
            LatencyBin(
                start_s=number * bin_s,
                completed=len(members),
                failed=len(members) - len(latencies),
                percentiles_ms={p: _nearest_rank(latencies, p) for p in percentiles}
                if latencies
                else {},
            )
        )
    return bins


def _nearest_rank(ordered: list[float], percentile: float) -> float:
    rank = max(1, math.ceil(percentile / 100 * len(ordered)))
    return ordered[rank - 1]
