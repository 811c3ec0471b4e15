"""Bounded waiting on a condition, for tests.

The condition is what the test waits for; the short pause between checks only yields the
loop. A condition that does not come true within ``timeout_s`` fails the test; the
default is sized for a cold, loaded 2-core machine (it stops a hang, it measures nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - the condition belongs to code we do not own
            await asyncio.sleep(0.01)
