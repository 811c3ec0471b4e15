"""Steady load, faults and figures for the worker fault tests on the Ray backend.

The load: ``callers`` concurrent callers, each sending one request after the other until
``requests`` were sent, every request recorded in a :class:`~tests.faults.history.History`.
A fault runs once a third of the requests have an outcome, so it lands mid-load.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import ray

from cluster.backends import ray as ray_backend
from cluster.backends.base import OnFrame
from cluster.bus import bus_status
from cluster.client import BusClient
from cluster.naming import actor_names, get_actor
from tests.faults.history import History, Operation
from transports.errors import BusTimeout
from transports.frame import Frame
from transports.message import Response

__all__ = [
    "Fault",
    "Request",
    "answer_of",
    "count_responses",
    "in_flight_at",
    "kill_busy_worker",
    "latencies",
    "percentile",
    "steady_load",
    "tool_request",
    "wait_for_pool",
]

Request = Callable[[str], Awaitable[Any]]


@dataclass
class Fault:
    """What a fault did and when (``time.monotonic``, the history's clock)."""

    at: float
    target: str


def tool_request(
    client: BusClient,
    tool: str,
    arguments: dict[str, Any],
    deadline_s: float,
    *,
    key_argument: str = "key",
) -> Request:
    """A request calling ``tool`` with ``arguments`` plus the request's key (as
    ``key_argument``; the tool must answer it).

    No outcome from the bus within the deadline (the client's ``BusTimeout``) is recorded
    as none at all: the history counts that request lost, never as an answer.
    """

    async def request(key: str) -> Any:
        try:
            return await client.call_tool(
                tool, {**arguments, key_argument: key}, timeout_s=deadline_s
            )
        except BusTimeout as exc:
            raise TimeoutError from exc

    return request


def answer_of(result: Any) -> Any:
    """The key a tool result answers (``None`` for a tool error: seen as crossed)."""
    return (result.structured_content or {}).get("result")


async def steady_load(
    history: History,
    request_of: Callable[[int], Request],
    *,
    requests: int,
    callers: int,
    deadline_s: float,
    fault: Callable[[], Awaitable[Fault]],
) -> Fault:
    """Run the load; ``fault`` runs once a third of the requests have an outcome."""
    tickets = itertools.count()

    async def caller(number: int) -> None:
        request = request_of(number)
        while next(tickets) < requests:
            await history.call(number, request, deadline_s=deadline_s, answer_of=answer_of)

    async def fault_mid_load() -> Fault:
        async with asyncio.timeout(deadline_s * 4 + 60):
            while sum(op.answered for op in history.operations.values()) < requests // 3:  # noqa: ASYNC110 - the callers' progress
                await asyncio.sleep(0.01)  # polling the load's own progress
        return await fault()

    *_, done = await asyncio.gather(*(caller(n) for n in range(callers)), fault_mid_load())
    assert isinstance(done, Fault)
    return done


async def kill_busy_worker(client: BusClient, pool: str) -> Fault:
    """``ray.kill`` a worker of ``pool`` while it runs at least one call."""
    supervisor = get_actor(actor_names.supervisor(client.bus))
    names: list[str] = (await supervisor.workers.remote())[pool]
    async with asyncio.timeout(60):
        while True:
            for name in names:
                handle = get_actor(name)
                if (await handle.status.remote())["in_flight"] > 0:
                    ray.kill(handle, no_restart=True)
                    return Fault(time.monotonic(), name)
            await asyncio.sleep(0.005)  # polling the workers for a call in flight


async def wait_for_pool(
    client: BusClient, pool: str, workers: int, *, without: str = "", timeout_s: float = 120
) -> float:
    """Wait until ``pool`` serves with ``workers`` workers, none of them ``without``;
    returns when (``time.monotonic``). Bounded for a cold, loaded machine."""
    supervisor = get_actor(actor_names.supervisor(client.bus))
    async with asyncio.timeout(timeout_s):
        while True:
            names = (await supervisor.workers.remote())[pool]
            routed = (await bus_status(client.bus))["pools"][pool]["workers"]
            if len(names) == workers and without not in names and routed == workers:
                return time.monotonic()
            await asyncio.sleep(0.05)  # polling the supervisor and the router


def in_flight_at(history: History, moment: float) -> list[Operation]:
    """The requests invoked before ``moment`` and not answered by then."""
    return [
        op
        for op in history.operations.values()
        if op.invoked_at <= moment and not (op.outcomes and op.outcomes[0][2] <= moment)
    ]


def latencies(operations: list[Operation]) -> list[float]:
    return [op.outcomes[0][2] - op.invoked_at for op in operations if op.outcomes]


def percentile(values: list[float], fraction: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


@contextmanager
def count_responses() -> Iterator[dict[tuple[str, str], list[str]]]:
    """Every response frame reaching this process's clients, by correlation key ("ok" or
    the error code, in order of arrival), before a client drops a late or duplicate one:
    a tap on the Ray client link's hand-off (in the test process; raybus has no hook)."""
    seen: dict[tuple[str, str], list[str]] = defaultdict(list)
    original = ray_backend.dispatch

    async def tap(frames: list[Frame], on_frame: OnFrame) -> None:
        for frame in frames:
            message = frame.decode()
            if isinstance(message, Response):
                outcome = "ok" if message.error is None else str(message.error.code)
                seen[(frame.envelope.client_id, frame.envelope.request_id)].append(outcome)
        await original(frames, on_frame)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ray_backend, "dispatch", tap)
        yield seen
