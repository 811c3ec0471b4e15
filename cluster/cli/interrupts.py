"""Signals during start-up: SIGINT / SIGTERM cancel the start instead of being ignored.

Starting a bus awaits Ray for seconds to minutes; a user pressing Ctrl-C then expects
it to stop, and what was started to be torn down (``launch_bus`` does that when it is
cancelled). The loop's own handlers are used, not Python's default one, because Ray's
driver may have replaced it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

from transports.errors import BusError

__all__ = ["Interrupt", "StartInterrupted", "signals_cancel"]


class StartInterrupted(BusError):
    """SIGINT / SIGTERM arrived while the bus was starting; what had started was stopped."""

    def __init__(self, bus: str) -> None:
        super().__init__(bus)
        self.bus = bus

    def __str__(self) -> str:
        return f"starting bus {self.bus!r} was interrupted; what had started was stopped"


class Interrupt:
    fired = False


@contextlib.contextmanager
def signals_cancel(loop: asyncio.AbstractEventLoop) -> Iterator[Interrupt]:
    """SIGINT / SIGTERM cancel the current task for the duration of the block."""
    interrupt = Interrupt()
    task = asyncio.current_task()
    if task is None:
        yield interrupt
        return

    def cancel() -> None:
        interrupt.fired = True
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, cancel)
    try:
        yield interrupt
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
