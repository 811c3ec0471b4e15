"""A client's mailbox on the cluster: workers and the router deliver to it in batches.

A driver (a notebook, a batch job) cannot receive actor calls, so its
:class:`~cluster.client.BusClient` owns one :class:`ClientEndpoint` actor and long-polls
it: each ``take`` returns everything that arrived since the last one. Responses are
bounded by the client's own calls in flight; the mailbox cap is a last guard against a
client that stopped polling, and every frame it drops is counted and logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import ray

from transports.frame import Frame

__all__ = ["ClientEndpoint"]

logger = logging.getLogger(__name__)


@ray.remote
class ClientEndpoint:
    def __init__(self, max_buffered: int = 1_000_000) -> None:
        self._frames: deque[Frame] = deque()
        self._max_buffered = max_buffered
        self._arrived = asyncio.Event()
        self.dropped = 0

    async def deliver(self, frames: list[Frame]) -> None:
        self._frames.extend(frames)
        overflow = len(self._frames) - self._max_buffered
        if overflow > 0:
            self.dropped += overflow
            logger.warning("client mailbox full: dropping %d frame(s)", overflow)
            for _ in range(overflow):
                self._frames.popleft()
        self._arrived.set()

    async def take(self, max_frames: int, timeout_s: float) -> list[Frame]:
        """Everything waiting (up to ``max_frames``); waits up to ``timeout_s`` for one."""
        if not self._frames:
            self._arrived.clear()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._arrived.wait()
            except TimeoutError:
                return []
        count = min(max_frames, len(self._frames))
        return [self._frames.popleft() for _ in range(count)]
