"""Coalesce messages per destination into batches, in order, one batch in flight each.

An actor call costs about a millisecond here, so nothing in raybus sends one message per
call. Items for a destination go out as one batch per event-loop turn; while a batch is
in flight, new items wait and leave together as the next batch. So:

* at low load a message leaves at once (batching adds no latency to a lone message);
* under load batches grow by themselves, one call per destination per round trip, and
  ``min_interval_s`` spaces consecutive sends to a busy destination so each carries
  more (an actor call's fixed cost, ~0.3 ms of CPU on each side, dominates small
  batches); a destination idle for longer than the interval is never delayed;
* order per destination is kept even when the receiver is an async Ray actor, which
  may run concurrent calls out of submission order: the next batch is only sent once
  the previous one has been accepted.

``submit(destination, items)`` starts the send and returns an awaitable for its
completion (or None when it completed synchronously); ``on_answer`` is handed what that
awaitable returned, so a receiver can answer a batch with news of its own (a worker
answers the router's calls with the completions it holds). ``on_settled`` is handed each
batch once its send ended either way (accepted, failed, or dropped by ``submit``): what
must wait until a message has left, such as a worker telling the router that a call is
done only once its answer reached the caller, waits for that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["BUSY_INTERVAL_S", "Outbox"]

logger = logging.getLogger(__name__)

# Spacing of sends to a busy destination on the hot paths (Kafka's producer linger default
# is also 5 ms): fills batches under load, +51% calls/s at 64 callers in the bus
# throughput benchmark (now `raybus bench` B5); a destination idle for 5 ms is never delayed.
BUSY_INTERVAL_S = 0.005

D = TypeVar("D", bound=Hashable)
T = TypeVar("T")

Submit = Callable[[D, list[T]], Awaitable[object] | None]
OnFailure = Callable[[D, list[T], BaseException], None]
OnAnswer = Callable[[D, object], None]
OnSettled = Callable[[D, list[T]], None]


class Outbox(Generic[D, T]):
    def __init__(
        self,
        submit: Submit[D, T],
        *,
        on_failure: OnFailure[D, T] | None = None,
        on_answer: OnAnswer[D] | None = None,
        on_settled: OnSettled[D, T] | None = None,
        max_batch: int = 4096,
        min_interval_s: float = 0.0,
    ) -> None:
        self._submit = submit
        self._min_interval_s = min_interval_s
        self._on_failure = on_failure
        self._on_answer = on_answer
        self._on_settled = on_settled
        self._max_batch = max_batch
        self._pending: dict[D, list[T]] = {}
        self._in_flight: dict[D, asyncio.Task[None]] = {}
        self._scheduled = False

    def put(self, destination: D, item: T) -> None:
        self._pending.setdefault(destination, []).append(item)
        if destination not in self._in_flight and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    @property
    def pending(self) -> int:
        return sum(len(items) for items in self._pending.values())

    def _flush(self) -> None:
        self._scheduled = False
        for destination in list(self._pending):
            if destination not in self._in_flight:
                self._send_next(destination)

    def _send_next(self, destination: D) -> None:
        items = self._pending.pop(destination, None)
        if not items:
            return
        batch, rest = items[: self._max_batch], items[self._max_batch :]
        if rest:
            self._pending[destination] = rest
        try:
            completion = self._submit(destination, batch)
        except Exception as exc:  # noqa: BLE001 - one failed submit must not lose the others
            self._failed(destination, batch, exc)
            completion = None
        if completion is None:
            self._settled(destination, batch)
            if destination in self._pending:
                self._send_next(destination)
            return
        task = asyncio.ensure_future(self._watch(destination, batch, completion))
        self._in_flight[destination] = task

    async def _watch(self, destination: D, batch: list[T], completion: Awaitable[object]) -> None:
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        try:
            try:
                answer = await completion
            finally:
                self._settled(destination, batch)
            if self._on_answer is not None and answer is not None:
                _answered(self._on_answer, destination, answer)
            if self._min_interval_s and destination in self._pending:
                # Busy destination: let the next batch fill up for the rest of the interval.
                remaining = sent_at + self._min_interval_s - loop.time()
                if remaining > 0:
                    await asyncio.sleep(remaining)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the watcher is the top of this send's task
            self._failed(destination, batch, exc)
        finally:
            self._in_flight.pop(destination, None)
        self._send_next(destination)

    def _settled(self, destination: D, batch: list[T]) -> None:
        if self._on_settled is None:
            return
        try:
            self._on_settled(destination, batch)
        except Exception:  # the send itself is over: one bad callback must not stop the next
            logger.exception("settling a batch for %s failed", destination)

    def _failed(self, destination: D, batch: list[T], exc: BaseException) -> None:
        if self._on_failure is None:
            logger.warning("dropped %d message(s) to %s: %s", len(batch), destination, exc)
        else:
            self._on_failure(destination, batch, exc)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Send everything pending and wait (bounded) until it has been accepted."""
        async with asyncio.timeout(timeout_s):
            while self._pending or self._in_flight:
                if self._pending and not self._scheduled:
                    self._flush()
                if self._in_flight:
                    await asyncio.wait(set(self._in_flight.values()))
                else:
                    await asyncio.sleep(0)


def _answered(on_answer: OnAnswer[D], destination: D, answer: object) -> None:
    try:
        on_answer(destination, answer)
    except Exception:  # a bad answer is not a failed send: the batch was accepted
        logger.exception("handling the answer of %s failed", destination)
