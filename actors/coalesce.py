"""One remote call for many concurrent requests of the same kind.

A Ray actor call costs about a millisecond of CPU on each side, whatever it carries. A
broker worker asks the pool's ledger twice per request (begin, then complete): at a few
hundred calls per second that made the ledger actor cost as much CPU as the Kafka broker
itself. So requests made while a batch is out wait and leave together in the next one;
a lone request leaves at once (one event-loop turn later), so a quiet worker pays no
added latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    """``await coalescer(item)`` is ``call_many([item])[0]``, batched with its neighbours.

    ``call_many`` gets the items in the order they were asked for and must answer one
    result per item, in that order; if it raises, every item of that batch raises it.
    At most one batch is out at a time. Not thread-safe: owned by one event loop.
    """

    def __init__(self, call_many: Callable[[list[Item]], Awaitable[list[Result]]]) -> None:
        self._call_many = call_many
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def __call__(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._waiting.append((item, future))
        if self._sender is None:
            self._sender = loop.create_task(self._send_while_waiting())
        return await future

    async def _send_while_waiting(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    results = await self._call_many([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(
                            f"a batch of {len(batch)} got {len(results)} result(s) back"
                        )
                except Exception as exc:  # noqa: BLE001 - each asker hears it, as from its own call
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:  # cancelled (the loop is closing): nobody is left out
                    left, self._waiting = self._waiting, []
                    for _, future in (*batch, *left):
                        future.cancel()
                    raise
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():  # its asker may have given up meanwhile
                        future.set_result(result)
        finally:
            self._sender = None
