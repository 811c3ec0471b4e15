"""A steady load of echo calls through a :class:`BusClient`, every call in a History.

Callers call back to back until the load is stopped or its count is spent, so faults
injected meanwhile hit calls in every state (queued at the router, running on a worker,
answering). Each call echoes its own key, so the checker sees crossed answers.

The client's own fallbacks become outcomes here with the codes a caller reads them as:
``BusTimeout`` (no answer by the deadline plus the client's grace) as 1001, recorded at
the time it fired so the checker counts it hung when late; ``ConnectionClosed`` (the
router unreachable while the batch was handed over) as 1004, "may have run", as
``cluster.data.retry`` treats it. How many of each is kept apart for the report.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from ray.exceptions import RayError

from cluster.client import BusClient
from tests.faults.figures import figure
from tests.faults.history import History, Verdict
from transports.errors import BusErrorCode, BusTimeout, CallError, ConnectionClosed

__all__ = ["SteadyLoad", "figures", "first_ok_after", "now", "poll_until"]


class SteadyLoad:
    """``callers`` concurrent callers of ``echo``, at most ``limit`` calls in all.

    ``pause_s``: each caller's pause between its calls, so a load that must span a slow
    recovery (a worker start) is not spent before it; 0 calls back to back.
    """

    def __init__(
        self,
        client: BusClient,
        *,
        callers: int,
        limit: int,
        deadline_s: float = 10.0,
        pause_s: float = 0.0,
    ) -> None:
        self.client = client
        self.history = History()
        self.deadline_s = deadline_s
        self.fallbacks: Counter[str] = Counter()  # client-side endings, by kind
        self._callers = callers
        self._left = limit
        self._pause_s = pause_s
        self._stop = asyncio.Event()
        self._progressed = asyncio.Event()  # set whenever a call ends (or a caller stops)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def done(self) -> int:
        """How many calls have an outcome so far."""
        return sum(1 for op in self.history.operations.values() if op.outcomes)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._caller(n)) for n in range(self._callers)]

    async def stop(self) -> None:
        """Start no new call; wait (bounded by the history's own wait) for those running."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def run_for(self, calls: int, timeout_s: float = 120.0) -> None:
        """Wait until ``calls`` more calls have an outcome (or the count is spent)."""
        goal = self.done + calls
        async with asyncio.timeout(timeout_s):
            while self.done < goal and not all(t.done() for t in self._tasks):
                self._progressed.clear()
                await self._progressed.wait()

    @property
    def exhausted(self) -> bool:
        """Did the load spend its whole count (so it may have ended before a fault)?"""
        return self._left <= 0

    async def _caller(self, number: int) -> None:
        try:
            await self._call_until_stopped(number)
        finally:
            self._progressed.set()

    async def _call_until_stopped(self, number: int) -> None:
        while not self._stop.is_set() and self._left > 0:
            self._left -= 1
            await self.history.call(
                number, self._echo, deadline_s=self.deadline_s, answer_of=_echoed
            )
            self._progressed.set()
            if self._pause_s:
                await asyncio.sleep(self._pause_s)  # the load's pace, not synchronisation

    async def _echo(self, key: str) -> Any:
        try:
            return await self.client.call_tool("echo", {"text": key}, timeout_s=self.deadline_s)
        except BusTimeout as exc:
            self.fallbacks["client timeout"] += 1
            raise CallError("tools/call", BusErrorCode.DEADLINE_EXCEEDED, str(exc)) from exc
        except ConnectionClosed as exc:
            self.fallbacks["router unreachable"] += 1
            raise CallError("tools/call", BusErrorCode.OUTCOME_UNKNOWN, str(exc)) from exc


def _echoed(result: Any) -> Any:
    return (result.structured_content or {}).get("result")


def first_ok_after(history: History, at: float) -> float | None:
    """Seconds from ``at`` (a ``time.monotonic`` reading) to the first call invoked
    after it that succeeded: how long the bus took to serve again."""
    endings = [
        outcome_at
        for op in history.operations.values()
        if op.invoked_at >= at
        for kind, _, outcome_at in op.outcomes[:1]
        if kind == "ok"
    ]
    return min(endings) - at if endings else None


def now() -> float:
    """The clock the history records with."""
    return time.monotonic()


async def poll_until(
    condition: Callable[[], Awaitable[bool]], timeout_s: float = 120.0, every_s: float = 0.1
) -> float:
    """Ask remote state until ``condition`` holds (bounded); returns the seconds it took.

    An actor that is restarting cannot answer yet: that reads as "not yet".
    """
    started = now()
    async with asyncio.timeout(timeout_s):
        while not await _answered(condition):  # noqa: ASYNC110 - remote state
            await asyncio.sleep(every_s)  # polling actors this test does not own
    return now() - started


async def _answered(condition: Callable[[], Awaitable[bool]]) -> bool:
    try:
        return await condition()
    except RayError:
        return False


def figures(case: str, verdict: Verdict, load: SteadyLoad, **measured: float | None) -> str:
    """One line of figures for the fault suite's table (printed; run with -s to see)."""
    line = json.dumps(
        {
            "case": case,
            "requests": verdict.total,
            "ok": verdict.ok,
            "errors": dict(verdict.errors),
            "lost": len(verdict.lost),
            "crossed": len(verdict.crossed),
            "hung": len(verdict.hung),
            "duplicated": len(verdict.duplicated),
            "client_fallbacks": dict(load.fallbacks),
            **{k: None if v is None else round(v, 2) for k, v in measured.items()},
        }
    )
    figure(f"FAULT-FIGURES {line}")
    return line
