"""Run a benchmark coroutine on a fresh local Ray sized like the development machine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import ray

T = TypeVar("T")


def on_local_ray(measure: Callable[[], Coroutine[Any, Any, T]]) -> T:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        return asyncio.run(measure())
    finally:
        ray.shutdown()
