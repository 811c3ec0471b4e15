"""The pool supervisor: creates, replaces and retires workers.

Workers are detached, named actors spread over the cluster's nodes. The supervisor keeps
each pool at its target size: a worker that dies is replaced; scaling down retires a
worker at the router, drains it (every call it holds finishes) and only then kills it.

A worker that cannot start is never waited for silently: during the bus's start the
first failure ends :meth:`SupervisorActor.start` with :class:`PoolStartFailed` (pool and
one-line reason) at once, whatever other pools are still doing; later (a replacement, a
scale-up) the failure is logged and kept per pool for ``raybus status``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import ray

from cluster.config import BusConfig, PoolConfig
from cluster.naming import NAMESPACE, HandleCache, actor_names
from cluster.ray_actors.worker import PoolStartFailed, WorkerActor, start_failure_reason

__all__ = ["PoolStartFailed", "SupervisorActor"]

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 120.0
# After a worker failed to start (outside the bus's own start), the pool is retried with
# a growing delay: a passing fault heals by itself, a lasting one does not spin.
_RETRY_MIN_S = 1.0
_RETRY_MAX_S = 60.0


@dataclass
class _PoolState:
    config: PoolConfig
    target: int
    workers: dict[str, Any] = field(default_factory=dict)  # actor name -> handle
    starting: set[str] = field(default_factory=set)
    retiring: set[str] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_failure: str | None = None  # why the latest worker failed to start
    retry_delay_s: float = _RETRY_MIN_S
    retry: asyncio.Task[None] | None = None


@ray.remote
class SupervisorActor:
    def __init__(self, config: BusConfig) -> None:
        self._config = config
        self._handles = HandleCache()
        self._pools = {p.name: _PoolState(p, p.min_workers) for p in config.pools}
        self._watchers: set[asyncio.Task[None]] = set()
        self._watched: set[str] = set()

    async def start(self) -> dict[str, int]:
        """Adopt live workers (after a restart), bring every pool to its target size."""
        await asyncio.to_thread(self._adopt_existing)
        for state in self._pools.values():
            for name, handle in state.workers.items():
                if name not in self._watched:
                    self._watch_later(state, name, handle)
        # gather raises the first failure as it happens, not after the slowest pool.
        await asyncio.gather(*(self._reconcile(name, strict=True) for name in self._pools))
        return {name: len(p.workers) for name, p in self._pools.items()}

    def _adopt_existing(self) -> None:
        for pool_name, state in self._pools.items():
            prefix = actor_names.worker(self._config.name, pool_name).rsplit("/", 1)[0] + "/"
            for entry in ray.util.list_named_actors(all_namespaces=True):
                name = entry["name"]
                if (
                    entry["namespace"] != NAMESPACE
                    or not name.startswith(prefix)
                    or name in state.workers
                ):
                    continue
                state.workers[name] = ray.get_actor(name, namespace=NAMESPACE)
                logger.info("adopted running worker %s", name)

    async def scale(self, pool: str, target: int) -> int:
        """Set a pool's size (clamped to its bounds); returns the new target."""
        state = self._pools[pool]
        state.target = max(state.config.min_workers, min(state.config.max_workers, target))
        await self._reconcile(pool)
        return state.target

    async def config(self) -> BusConfig:
        """The bus's configuration (clients read the backend settings from it)."""
        return self._config

    async def sizes(self) -> dict[str, int]:
        """Each pool's target size (what the supervisor is converging to)."""
        return {name: p.target for name, p in self._pools.items()}

    async def workers(self) -> dict[str, list[str]]:
        return {name: sorted(p.workers) for name, p in self._pools.items()}

    async def pools(self) -> dict[str, dict[str, Any]]:
        """Each pool's target, workers started or starting, and last start failure."""
        return {
            name: {
                "target": p.target,
                "workers": len(p.workers) - len(p.starting),
                "starting": len(p.starting),
                "last_failure": p.last_failure,
            }
            for name, p in self._pools.items()
        }

    async def shutdown(self) -> None:
        """Drain and stop every worker."""
        for state in self._pools.values():
            state.target = 0
            state.config = state.config.model_copy(update={"min_workers": 0})
        await asyncio.gather(*(self._reconcile(name) for name in self._pools))

    async def _reconcile(self, pool: str, *, strict: bool = False) -> None:
        state = self._pools[pool]
        async with state.lock:
            live = len(state.workers) - len(state.retiring)
            if live < state.target:
                missing = state.target - live
                await asyncio.gather(*(self._add_worker(state, strict) for _ in range(missing)))
            elif live > state.target:
                victims = await self._choose_victims(state, live - state.target)
                await asyncio.gather(*(self._retire(state, name) for name in victims))

    async def _add_worker(self, state: _PoolState, strict: bool = False) -> None:
        """Create a worker and wait for it to start.

        Raises:
            PoolStartFailed: it did not start and ``strict`` (the bus's own start) is set.
        """
        name = actor_names.worker(self._config.name, state.config.name)
        handle = WorkerActor.options(  # type: ignore[attr-defined]
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",
            num_cpus=state.config.num_cpus,
            scheduling_strategy="SPREAD",
            max_concurrency=10_000,
            # Ray ships the pool's code and environment to whichever node runs it.
            runtime_env=state.config.runtime_env or None,
        ).remote(self._config, state.config, name)
        state.workers[name] = handle
        state.starting.add(name)
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                info = await handle.start.remote()
        except Exception as exc:  # noqa: BLE001 - reported below, with the pool and why
            reason = (
                f"its worker did not start within {_START_TIMEOUT_S:g} s"
                if isinstance(exc, TimeoutError)
                else start_failure_reason(exc)
            )
            state.last_failure = reason
            logger.error(
                "worker %s of pool %s failed to start: %s", name, state.config.name, reason
            )
            state.workers.pop(name, None)
            ray.kill(handle)
            if strict:
                raise PoolStartFailed(state.config.name, reason) from None
            self._retry_later(state)
            return
        finally:
            state.starting.discard(name)
        state.last_failure = None
        state.retry_delay_s = _RETRY_MIN_S
        logger.info("worker %s started on node %s", name, info.get("node_id", "?")[:8])
        self._watch_later(state, name, handle)

    def _retry_later(self, state: _PoolState) -> None:
        if state.retry is not None and not state.retry.done():
            return
        delay = state.retry_delay_s
        state.retry_delay_s = min(delay * 2, _RETRY_MAX_S)
        logger.info("pool %s: next worker start in %.0f s", state.config.name, delay)
        state.retry = asyncio.get_running_loop().create_task(self._retry(state, delay))

    async def _retry(self, state: _PoolState, delay_s: float) -> None:
        await asyncio.sleep(delay_s)  # the backoff itself, not synchronisation
        await self._reconcile(state.config.name)

    def _watch_later(self, state: _PoolState, name: str, handle: Any) -> None:
        self._watched.add(name)
        watcher = asyncio.get_running_loop().create_task(self._watch(state, name, handle))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, state: _PoolState, name: str, handle: Any) -> None:
        try:
            await handle.wait_stopped.remote()
        except Exception as exc:  # noqa: BLE001 - the actor died: replace it
            if name in state.retiring or name not in state.workers:
                return
            logger.warning("worker %s died (%s); replacing it", name, type(exc).__name__)
            state.workers.pop(name, None)
            router = await self._handles.get_async(actor_names.router(self._config.name))
            await router.forget_worker.remote(name)
            await self._reconcile(state.config.name)

    async def _choose_victims(self, state: _PoolState, count: int) -> list[str]:
        router = await self._handles.get_async(actor_names.router(self._config.name))
        outstanding: dict[str, int] = await router.outstanding.remote()
        candidates = [
            n for n in state.workers if n not in state.retiring and n not in state.starting
        ]
        candidates.sort(key=lambda n: outstanding.get(n, 0))
        return candidates[:count]

    async def _retire(self, state: _PoolState, name: str) -> None:
        handle = state.workers[name]
        state.retiring.add(name)
        bus = self._config.name
        try:
            router = await self._handles.get_async(actor_names.router(bus))
            frames_sent = await router.retire.remote(name)
            finished = await handle.drain.remote(frames_sent, self._config.drain_timeout_s)
            if not finished:
                logger.warning("worker %s did not finish its calls before the drain timeout", name)
            await router.forget_worker.remote(name)
            discovery = await self._handles.get_async(actor_names.discovery(bus))
            await discovery.forget.remote(name.rsplit("/", 1)[-1])
        finally:
            ray.kill(handle)
            state.workers.pop(name, None)
            state.retiring.discard(name)
            logger.info("worker %s drained and stopped", name)
