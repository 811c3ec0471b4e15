"""Bounded streaming fan-out: run many calls, yield each outcome as it completes.

:func:`stream_bounded` is the engine under :meth:`BusClient.stream_tool_calls
<cluster.client.BusClient.stream_tool_calls>` (and so under ``map_tool_calls``):

* Input is pulled lazily from any iterable or async iterable, one item per free slot.
* At most ``concurrency`` items are held at any time - running, or finished and not yet
  handed to the consumer - so memory stays flat however long the input is. A slot is
  refilled only after its outcome has been yielded: a slow consumer slows the input down
  instead of piling up results.
* Outcomes are yielded in completion order; ``run`` gets each item's index to put in its
  outcome.
* An async input is awaited alongside the running calls, not before them: an input that
  waits for the consumer (a work queue fed from the results) never deadlocks the stream.
* When the consumer stops early (``break`` inside ``contextlib.aclosing``, ``aclose()``,
  or its task is cancelled), every call still running is cancelled and awaited before
  the generator finishes: nothing keeps running for a consumer that left. An exception
  from the input or from ``run`` ends the stream the same way, then propagates. The input
  itself is left as it is (as a ``for`` loop leaves it).

Completions are collected by done-callbacks into a deque rather than by ``asyncio.wait``
over the running set: ``wait`` registers a callback on every running task per completion
(O(concurrency) per call), the callbacks cost O(1).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
)
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import mcp_types as types

from transports.errors import BusError

__all__ = ["IndexedOutcome", "check_concurrency", "checked_tool_call", "stream_bounded"]

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True, slots=True)
class IndexedOutcome:
    """The outcome of one tool call of a stream, with the position of its input.

    Attributes:
        index: the 0-based position of the call in the input.
        outcome: the tool's result, or the :class:`~transports.errors.BusError` the call
            ended with (a ``CallError``, a ``BusTimeout``, ...). A tool that reports its
            own failure (``isError``) is a result, as with :meth:`BusClient.call_tool`.
    """

    index: int
    outcome: types.CallToolResult | BusError

    @property
    def error(self) -> BusError | None:
        """The error the call ended with, or None when it returned a result."""
        return self.outcome if isinstance(self.outcome, BusError) else None


def check_concurrency(concurrency: int) -> None:
    """Raises ValueError naming the value unless ``concurrency`` is an integer >= 1."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")


def stream_bounded(
    items: Iterable[In] | AsyncIterable[In],
    run: Callable[[int, In], Coroutine[Any, Any, Out]],
    *,
    concurrency: int,
) -> AsyncGenerator[Out, None]:
    """Yield ``await run(index, item)`` for every item, as each completes.

    Raises:
        ValueError: ``concurrency`` is not an integer >= 1 (raised here, at the call,
            before any item is pulled).
    """
    check_concurrency(concurrency)
    return _Fanout(items, run, concurrency).outcomes()


class _End:
    """The input is exhausted."""


_END = _End()


async def _next_of(source: AsyncIterator[In]) -> In | _End:
    try:
        return await anext(source)
    except StopAsyncIteration:
        return _END


class _Fanout(Generic[In, Out]):
    def __init__(
        self,
        items: Iterable[In] | AsyncIterable[In],
        run: Callable[[int, In], Coroutine[Any, Any, Out]],
        concurrency: int,
    ) -> None:
        self._async_source: AsyncIterator[In] | None = None
        self._sync_source: Iterator[In] | None = None
        if isinstance(items, AsyncIterable):
            self._async_source = aiter(items)
        else:
            self._sync_source = iter(items)
        self._run = run
        self._concurrency = concurrency
        self._held: set[asyncio.Task[Out]] = set()  # running or not yet yielded
        self._finished: deque[asyncio.Task[Out]] = deque()
        self._pull: asyncio.Task[In | _End] | None = None
        self._exhausted = False
        self._pulled = 0
        self._wake = asyncio.Event()

    async def outcomes(self) -> AsyncGenerator[Out, None]:
        try:
            while True:
                self._refill()
                if not self._held and self._pull is None:
                    return
                while not self._finished and not (self._pull is not None and self._pull.done()):
                    self._wake.clear()
                    await self._wake.wait()
                if self._pull is not None and self._pull.done():
                    item = self._pull.result()
                    self._pull = None
                    if isinstance(item, _End):
                        self._exhausted = True
                    else:
                        self._start(item)
                    continue
                task = self._finished.popleft()
                self._held.discard(task)
                yield task.result()
        finally:
            await self._cancel_all()

    def _refill(self) -> None:
        if self._exhausted or len(self._held) >= self._concurrency:
            return
        if self._async_source is not None:
            if self._pull is None:
                self._pull = asyncio.get_running_loop().create_task(_next_of(self._async_source))
                self._pull.add_done_callback(self._wakeup)
            return
        assert self._sync_source is not None
        while len(self._held) < self._concurrency:
            try:
                item = next(self._sync_source)
            except StopIteration:
                self._exhausted = True
                return
            self._start(item)

    def _start(self, item: In) -> None:
        index = self._pulled
        self._pulled += 1
        task = asyncio.get_running_loop().create_task(
            self._run(index, item), name=f"raybus-fanout-{index}"
        )
        self._held.add(task)
        task.add_done_callback(self._completed)

    def _completed(self, task: asyncio.Task[Out]) -> None:
        if task in self._held:  # not one cancelled while the stream closes
            self._finished.append(task)
            self._wake.set()

    def _wakeup(self, _: asyncio.Task[In | _End]) -> None:
        self._wake.set()

    async def _cancel_all(self) -> None:
        # Done ones too: gathering them retrieves an exception nobody will read.
        held: list[asyncio.Task[Any]] = [*self._held]
        if self._pull is not None:
            held.append(self._pull)
        self._held.clear()
        self._finished.clear()
        for task in held:
            task.cancel()
        if held:
            await asyncio.gather(*held, return_exceptions=True)


def checked_tool_call(index: int, call: object) -> tuple[str, dict[str, Any] | None]:
    """One fan-out item as a (tool name, arguments) pair, or a TypeError naming it."""
    if (
        isinstance(call, tuple | list)
        and len(call) == 2
        and isinstance(call[0], str)
        and (call[1] is None or isinstance(call[1], dict))
    ):
        return call[0], call[1]
    raise TypeError(f"call {index}: expected a (tool name, arguments dict) pair, got {call!r:.200}")
