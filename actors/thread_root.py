"""Give anyio's thread pool a root task on a Ray actor's event loop.

The SDK runs a synchronous tool with ``anyio.to_thread.run_sync``. anyio keeps its worker
threads for reuse under the event loop's *root task*, which it finds as the task that
``asyncio.run`` / ``run_until_complete`` drives. A Ray async actor's loop is driven by
``run_forever``, so there is none, and on every synchronous call anyio

* scans every task of the loop looking for one (10,000 calls in flight: 10,000 tasks), and
* settles for the calling task itself: a new thread is started for the call and stopped
  when its task ends.

Measured on this machine, 64 concurrent calls of a trivial sync function on such a loop:
0.40 ms of CPU per call, 2.9 ms with 10,000 other tasks alive; with a root task set,
0.10 and 0.14 ms. The SDK served over uvicorn (``asyncio.run``) never pays this.

:func:`pin_thread_pool_root` names a task that lives as long as the actor as that root.
It sets anyio's own (private) ``_root_task`` run variable, the one anyio sets itself when
it finds a root; if a future anyio moves it, nothing breaks, calls just cost what they
did (``tests/actors/test_thread_root.py`` then fails and says so).
"""

from __future__ import annotations

import asyncio
import logging

__all__ = ["pin_thread_pool_root"]

logger = logging.getLogger(__name__)


async def pin_thread_pool_root() -> asyncio.Task[None] | None:
    """Make a task that lives until cancelled anyio's root task on the running loop.

    Returns the task (cancel it when the actor stops: anyio then stops the threads it
    started under it), or None where anyio's variable is not found.
    """
    try:
        from anyio._backends._asyncio import _root_task
    except ImportError:
        logger.warning("anyio's root task variable moved: sync tools start a thread per call")
        return None
    root = asyncio.get_running_loop().create_task(
        _until_cancelled(), name="raybus anyio thread-pool root"
    )
    _root_task.set(root)
    return root


async def _until_cancelled() -> None:
    await asyncio.Event().wait()
