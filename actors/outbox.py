"""Coalesce messages per destination into one call per event-loop turn.

An actor call costs about a millisecond here, so nothing in raybus sends one message per
call. Items put in the same loop turn (and while a previous batch is being submitted) go
out together: at low load a message leaves at once, under load batches grow by
themselves. There is no linger timer, so batching never adds latency.

``submit(destination, items)`` must start the send synchronously (e.g. ``.remote()``) and
may return an awaitable for its completion; submission order per destination is kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Outbox"]

logger = logging.getLogger(__name__)

D = TypeVar("D", bound=Hashable)
T = TypeVar("T")

Submit = Callable[[D, list[T]], Awaitable[object] | None]
OnFailure = Callable[[D, list[T], BaseException], None]


class Outbox(Generic[D, T]):
    def __init__(
        self,
        submit: Submit[D, T],
        *,
        on_failure: OnFailure[D, T] | None = None,
        max_batch: int = 4096,
    ) -> None:
        self._submit = submit
        self._on_failure = on_failure
        self._max_batch = max_batch
        self._pending: dict[D, list[T]] = {}
        self._scheduled = False
        self._in_flight: set[asyncio.Task[None]] = set()

    def put(self, destination: D, item: T) -> None:
        self._pending.setdefault(destination, []).append(item)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def put_many(self, destination: D, items: list[T]) -> None:
        for item in items:
            self.put(destination, item)

    @property
    def pending(self) -> int:
        return sum(len(items) for items in self._pending.values())

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        for destination, items in pending.items():
            for start in range(0, len(items), self._max_batch):
                batch = items[start : start + self._max_batch]
                try:
                    completion = self._submit(destination, batch)
                except Exception as exc:  # noqa: BLE001 - one failed submit must not lose the others
                    self._failed(destination, batch, exc)
                    continue
                if completion is not None:
                    task = asyncio.ensure_future(self._watch(destination, batch, completion))
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)

    async def _watch(self, destination: D, batch: list[T], completion: Awaitable[object]) -> None:
        try:
            await completion
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the watcher is the top of this send's task
            self._failed(destination, batch, exc)

    def _failed(self, destination: D, batch: list[T], exc: BaseException) -> None:
        if self._on_failure is None:
            logger.warning("dropped %d message(s) to %s: %s", len(batch), destination, exc)
        else:
            self._on_failure(destination, batch, exc)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Submit what is pending and wait (bounded) for every submitted batch."""
        if self._pending:
            self._flush()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=timeout_s)
