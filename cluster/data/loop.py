"""An event loop of one's own, in a daemon thread, for code that Ray Data calls synchronously.

Ray Data calls a callable class's ``__call__`` on the actor's thread, one batch at a time,
while asyncio clients (``BusClient``, the SDK's ``Client``) are bound to the loop they
were opened on. A :class:`LoopThread` keeps one loop alive for the actor's whole life:
clients are opened on it once, and each batch is one coroutine handed over to it
(``asyncio.run`` per batch would need a new client per batch).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")

_STOP_TIMEOUT_S = 10.0


class LoopThread:
    """An asyncio loop running in a daemon thread, fed coroutines from other threads."""

    def __init__(self, name: str = "raybus-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coroutine`` on the loop; block until it returns (or raise what it raised).

        Raises:
            TimeoutError: ``timeout_s`` passed first (the coroutine is cancelled).
        """
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        """Stop the loop and close it once its thread has ended (idempotent)."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_STOP_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()
