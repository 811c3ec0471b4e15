"""What a workload family gets from the runner, and what it may raise.

A *family* is the workloads that share a setup (B1 and B2 share one ``raybus up``, one
SDK server and one load generator). It runs as one coroutine taking a
:class:`BenchContext` and hands each finished row to ``context.emit``; rows it did not
emit when it ended (it raised :class:`Skip`, or failed) are filled in by the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.measure import (
    DEFAULT_DURATION_S,
    DEFAULT_ROUNDS,
    Call,
    RoundResult,
    closed_loop,
    interleaved,
)
from benchmarks.processes import cpu_seconds, descendants
from benchmarks.report import Row
from cluster.bus import bus_status, launch_bus, stop_bus
from cluster.client import BusClient
from cluster.config import parse_config
from transports.errors import BusError

__all__ = [
    "DEFAULT_DURATION_S",
    "DEFAULT_ROUNDS",
    "SPARE_READY_S",
    "BenchContext",
    "Family",
    "Skip",
    "Workload",
    "compare_loops",
    "running_bus",
    "tree_except",
    "warm_spare_ready",
    "with_cpu",
]


@dataclass(frozen=True)
class Workload:
    """A row of the table: its id, what it measures, and the issue's goal for it."""

    id: str
    title: str
    goal: str


class Skip(Exception):
    """This family cannot run here (e.g. Kafka cannot start); ``str()`` says why."""


@dataclass
class BenchContext:
    """Settings and services shared by every family of one run."""

    duration_s: float
    rounds: int
    cores: int
    ray_address: str
    workdir: Path
    selected: frozenset[str]
    emit: Callable[[Row], None] = lambda row: None
    progress: Callable[[str], None] = lambda text: None

    @property
    def scale(self) -> float:
        """How much of a fixed-size workload (a burst) to run: 1.0 at the default duration."""
        return min(1.0, self.duration_s / DEFAULT_DURATION_S)

    def wants(self, workload: Workload) -> bool:
        return workload.id in self.selected

    def bus_name(self, family: str) -> str:
        return f"bench-{family}-{uuid.uuid4().hex[:6]}"

    def write_config(self, config: dict[str, Any]) -> Path:
        """``config`` as a bus YAML file in the run's scratch directory."""
        path = self.workdir / f"{config['name']}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path


@dataclass(frozen=True)
class Family:
    """Workloads sharing one setup, and the coroutine that measures them."""

    name: str
    workloads: tuple[Workload, ...]
    run: Callable[[BenchContext], Awaitable[None]]
    ids: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(w.id for w in self.workloads))


async def with_cpu(
    groups: Callable[[], dict[str, list[int]]], measure: Callable[[], Awaitable[RoundResult]]
) -> RoundResult:
    """Run one round and add the CPU seconds each process group spent meanwhile.

    ``groups`` names process groups (e.g. ``{"raybus": pids, "sdk": [pid]}``); it is read
    before and after the round, so a process started during it (a worker the autoscaler
    added) counts with all its CPU time, and one that ended during it is left out.
    """
    before = {pid: cpu for pids in groups().values() for pid, cpu in _cpu_by_pid(pids).items()}
    result = await measure()
    for name, pids in groups().items():
        after = _cpu_by_pid(pids)
        result.cpu_s[name] = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
    return result


async def compare_loops(
    sides: dict[str, Call],
    *,
    callers: int,
    duration_s: float,
    rounds: int,
    groups: Callable[[], dict[str, list[int]]],
) -> dict[str, list[RoundResult]]:
    """Warm each side up, then interleaved rounds of ``callers`` closed-loop callers."""
    for call in sides.values():  # first calls pay for imports, caches and connections
        await closed_loop([call] * callers, min(1.0, duration_s))

    def round_of(call: Call) -> Callable[[], Awaitable[RoundResult]]:
        return lambda: with_cpu(groups, lambda: closed_loop([call] * callers, duration_s))

    return await interleaved(rounds, {name: round_of(call) for name, call in sides.items()})


def _cpu_by_pid(pids: list[int]) -> dict[int, float]:
    return {pid: cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None}


def tree_except(*excluded: int) -> list[int]:
    """Every process below this one except ``excluded`` and their own descendants."""
    skip = set(excluded)
    for pid in excluded:
        skip.update(descendants(pid))
    return [pid for pid in descendants() if pid not in skip]


@contextlib.asynccontextmanager
async def running_bus(config: dict[str, Any]) -> AsyncIterator[BusClient]:
    """Launch the bus ``config`` describes on the bench's Ray; a client to it; stop it."""
    parsed = parse_config(config)
    await launch_bus(parsed)
    try:
        client = await BusClient.connect(parsed.name)
        try:
            yield client
        finally:
            await client.close()
    finally:
        await stop_bus(parsed.name)


SPARE_READY_S = 120.0  # a worker's cold start on a loaded 2-core machine, with room
_SPARE_SAMPLE_S = 0.2


async def warm_spare_ready(bus: str, pool: str = "bench") -> bool:
    """Wait until ``pool`` has its warm spare; False if it did not come in time.

    A burst row starts once the spare is up, as a pool meets real load: the spare starts
    in the background right after the bus is ready, and a burst that arrives first would
    time that cold start instead of the pool's growth.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SPARE_READY_S):
            while True:
                with contextlib.suppress(BusError):
                    status: dict[str, Any] = await bus_status(bus)
                    if status["pools"].get(pool, {}).get("spares", 0) >= 1:
                        return True
                await asyncio.sleep(_SPARE_SAMPLE_S)  # the spare starts in the background
    return False
