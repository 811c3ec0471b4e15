"""anyio's thread pool on a loop driven like a Ray actor's (``run_forever``): without a
root task every sync call gets a thread of its own; with one, threads are reused."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

import anyio

from actors.thread_root import pin_thread_pool_root

CALLS = 30


def on_a_ray_like_loop(
    coroutine: Coroutine[Any, Any, list[threading.Thread]],
) -> list[threading.Thread]:
    """Run ``coroutine`` on a loop in its own thread, driven by run_forever (no root task)."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(timeout=30)


async def threads_used(pin: bool) -> list[threading.Thread]:
    root = await pin_thread_pool_root() if pin else None
    seen: list[threading.Thread] = []  # the objects themselves: ids are never reused

    async def call() -> None:  # each in its own task, as the worker serves calls
        seen.append(await anyio.to_thread.run_sync(threading.current_thread))

    loop = asyncio.get_running_loop()
    for _ in range(CALLS):
        await loop.create_task(call())
    if root is not None:
        root.cancel()  # anyio stops the threads it kept under it
    return seen


def distinct(threads: list[threading.Thread]) -> int:
    return len({id(thread) for thread in threads})


def test_without_a_root_each_sync_call_starts_a_thread() -> None:
    # What pin_thread_pool_root is for; if anyio one day finds a root on such a loop
    # by itself, this fails and the pin can go.
    assert distinct(on_a_ray_like_loop(threads_used(pin=False))) == CALLS


def test_with_the_root_pinned_sync_calls_reuse_one_thread() -> None:
    assert distinct(on_a_ray_like_loop(threads_used(pin=True))) == 1
