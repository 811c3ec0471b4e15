"""The pool supervisor: creates, replaces and retires workers, and keeps warm spares.

Workers are detached, named actors spread over the cluster's nodes. The supervisor keeps
each pool at its target size: a worker that dies is replaced; scaling down retires a
worker at the router, drains it (every call it holds finishes) and only then kills it.

Warm spares make a scale-up fast. Starting a worker costs a process, Ray's and the SDK's
imports and the server's start (~1.5 s on a quiet 2-core machine, far more when loaded);
activating a spare costs one actor call and a heartbeat (tens of ms). An autoscaled pool
keeps ``warm_spares`` spares (never more than ``max_workers`` minus its target): workers
whose server is started and handshaken but which never registered, so no call reaches
them and they count toward neither the pool's size nor its capacity. A scale-up
activates spares first and starts new workers only for the rest; spares are refilled in
the background once the pool is resized. A spare of a pool that reserves resources holds
them like a worker, so spares are created only where a worker fits now (on a node the
pool's label selector allows). Spares are stopped with the
bus; a spare that dies is not replaced until the pool is next resized (no crash loop).

A worker that stops answering (a tool blocking its event loop: no heartbeats, no
calls) is killed once it has been silent for the discovery TTL, the time after which
discovery evicts it and the router gives its calls "may have run" (1004); it is then
replaced like a worker that died. Alive but out of routing, it would shrink the pool for
good and hang the bus's stop (its drain could never run).

A worker that cannot start is never waited for silently: during the bus's start the
first failure ends :meth:`SupervisorActor.start` with :class:`PoolStartFailed` (pool and
one-line reason) at once, whatever other pools are still doing; later (a replacement, a
scale-up) the failure is logged and kept per pool for ``raybus status``.

The supervisor is the one owner of two gauges for every pool, autoscaled or not:
``raybus_pool_workers`` (its serving workers: started, not retiring) and
``raybus_pool_lag`` (read through the backend like the autoscaler's signal: the router's
queue, the Kafka group's lag, the SQS queue's depth). One owner because a page adds up
the same gauge from several processes; the autoscaler records only its decisions.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError

from cluster.backends.base import backend_for
from cluster.config import BusConfig, PoolConfig
from cluster.metrics.ray_export import RayExport, export_forever
from cluster.metrics.recorders import PoolRecorder
from cluster.metrics.registry import FamilySnapshot, MetricsRegistry
from cluster.naming import NAMESPACE, HandleCache, actor_names
from cluster.placement import read_cluster
from cluster.ray_actors.restarts import restarted, start_itself
from cluster.ray_actors.worker import PoolStartFailed, WorkerActor, start_failure_reason

__all__ = ["PoolStartFailed", "SupervisorActor"]

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 120.0
_STOP_SPARE_TIMEOUT_S = 10.0
# How long a router Ray is restarting may take to answer again (bounded: a router that
# never comes back fails the scale-down), and how often it is asked meanwhile.
_ROUTER_BACK_S = 60.0
_ROUTER_RETRY_S = 0.25
# After a worker failed to start (outside the bus's own start), the pool is retried with
# a growing delay: a passing fault heals by itself, a lasting one does not spin.
_RETRY_MIN_S = 1.0
_RETRY_MAX_S = 60.0
# How often the pools' lag is read for the gauge. Prometheus scrapes every 15 s or so;
# a Kafka reading opens two broker connections per pool, so it stays this rare.
_LAG_READ_INTERVAL_S = 5.0


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
    spares: dict[str, Any] = field(default_factory=dict)  # prepared, never routed
    spares_starting: dict[str, Any] = field(default_factory=dict)
    refill: asyncio.Task[None] | None = None


class SupervisorActor:
    def __init__(self, config: BusConfig) -> None:
        self._config = config
        self._handles = HandleCache()
        self._pools = {p.name: _PoolState(p, p.min_workers) for p in config.pools}
        self._watchers: set[asyncio.Task[None]] = set()
        self._watched: set[str] = set()
        self._stopping = False
        self._spares_held = False  # start(spares=False) until start_spares()
        self._backend = backend_for(config)
        # Workers past a Kafka topic's partitions would idle: no spare is kept for them.
        self._max_consumers = self._backend.max_consumers
        self._metrics = MetricsRegistry(config.name)
        self._gauges = PoolRecorder(self._metrics)
        self._metric_tasks: list[asyncio.Task[None]] = []
        self._lag_reading: asyncio.Task[None] | None = None
        self._start_begun = False
        if restarted():  # adopt the workers it had and supervise them again
            start_itself("start", lambda: self._start_begun, strict=False)

    async def start(self, spares: bool = True, *, strict: bool = True) -> dict[str, int]:
        """Adopt live workers (after a restart), bring every pool to its target size.

        ``strict`` (the bus's start): the first worker that cannot start ends this with
        :class:`PoolStartFailed`; otherwise (a Ray restart of the supervisor) that pool
        is retried later, like any replacement.

        Spares are started afterwards, in the background, or (``spares=False``) only
        once :meth:`start_spares` is called: a spare's start is a whole worker's (a
        process and the server's imports), and on a small machine the first ones compete
        with the rest of the bus's start (other pools, the gateway) for the same cores.
        """
        if self._start_begun and not strict:
            return {name: len(p.workers) for name, p in self._pools.items()}  # a resend
        self._start_begun = True
        self._spares_held = not spares
        self._record_pools()
        await asyncio.to_thread(self._adopt_existing)
        for state in self._pools.values():
            await self._sort_adopted(state)
            # A restarted supervisor starts from the config's targets; the workers it
            # adopts are what the pool had been scaled to, and retiring the ones over
            # min_workers would shrink a pool under load until the autoscaler grew it
            # back. Keep them; the autoscaler resizes from there.
            kept = min(len(state.workers), state.config.max_workers)
            state.target = max(state.target, kept)
            for name, handle in [*state.workers.items(), *state.spares.items()]:
                if name not in self._watched:
                    self._watch_later(state, name, handle)
        # gather raises the first failure as it happens, not after the slowest pool.
        await asyncio.gather(*(self._reconcile(name, strict=strict) for name in self._pools))
        if spares:
            await self.start_spares()
        return {name: len(p.workers) for name, p in self._pools.items()}

    async def start_spares(self) -> None:
        """Start each pool's warm spares in the background (after ``start(spares=False)``)."""
        self._spares_held = False
        for state in self._pools.values():
            self._refill_later(state)

    async def _sort_adopted(self, state: _PoolState) -> None:
        """Adopted actors that never went live are spares, not workers."""

        async def is_spare(handle: Any) -> bool:
            try:
                async with asyncio.timeout(_STOP_SPARE_TIMEOUT_S):
                    return not await handle.is_active.remote()
            except Exception:  # noqa: BLE001 - unanswered: keep it a worker, watched
                return False

        names = list(state.workers)
        verdicts = await asyncio.gather(*(is_spare(state.workers[n]) for n in names))
        for name, spare in zip(names, verdicts, strict=True):
            if spare:
                state.spares[name] = state.workers.pop(name)

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

    def _record_pools(self) -> None:
        """Start recording the pools' gauges (once; again after a restart)."""
        if self._metric_tasks:
            return
        loop = asyncio.get_running_loop()
        exporting = export_forever(RayExport(self._metrics), refresh=self._count_workers)
        self._lag_reading = loop.create_task(self._read_lag_forever())
        self._metric_tasks = [loop.create_task(exporting), self._lag_reading]

    def _count_workers(self) -> None:
        self._gauges.workers(
            {
                name: len(p.workers) - len(p.starting) - len(p.retiring)
                for name, p in self._pools.items()
            }
        )

    async def _read_lag_forever(self) -> None:
        while True:
            try:
                async with asyncio.timeout(_LAG_READ_INTERVAL_S * 4):
                    rows = await self._backend.lag(self._handles, list(self._pools))
                # A pool the reading leaves out has nothing queued (on Ray: the router
                # has not seen a worker of it yet, so nothing can wait for one).
                self._gauges.lag({pool: rows.get(pool, {"queued": 0}) for pool in self._pools})
            except Exception as exc:  # noqa: BLE001 - the gauge keeps its last reading
                logger.info("no lag reading for the pool gauges: %s", exc)
            await asyncio.sleep(_LAG_READ_INTERVAL_S)  # the reading period

    async def metrics_snapshot(self) -> list[FamilySnapshot]:
        """Every pool's workers and lag (for ``raybus up --metrics-port``)."""
        self._record_pools()
        self._count_workers()
        return self._metrics.snapshot()

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
                "spares": len(p.spares),
                "last_failure": p.last_failure,
            }
            for name, p in self._pools.items()
        }

    async def spares(self) -> dict[str, list[str]]:
        """Each pool's warm spares (started, not routed), by actor name."""
        return {name: sorted(p.spares) for name, p in self._pools.items()}

    async def shutdown(self) -> None:
        """Stop every spare, drain and stop every worker."""
        self._stopping = True
        spares: list[tuple[str, Any]] = []
        for state in self._pools.values():
            state.target = 0
            state.config = state.config.model_copy(update={"min_workers": 0})
            if state.refill is not None:
                state.refill.cancel()  # a spare it is starting is in the list below
            spares += [*state.spares.items(), *state.spares_starting.items()]
            state.spares.clear()
            state.spares_starting.clear()
        await asyncio.gather(*(self._stop_spare(name, handle) for name, handle in spares))
        await asyncio.gather(*(self._reconcile(name) for name in self._pools))
        # No pool is left to read: the backend's lag clients (Kafka) are closed now, not
        # left for the actor's kill to drop.
        if self._lag_reading is not None:
            self._lag_reading.cancel()
            await asyncio.gather(self._lag_reading, return_exceptions=True)
        await self._backend.close()

    async def _reconcile(self, pool: str, *, strict: bool = False) -> None:
        state = self._pools[pool]
        async with state.lock:
            live = len(state.workers) - len(state.retiring)
            if live < state.target:
                missing = state.target - live
                # Spares first, then the starts: a spare's activation is an actor call,
                # and process starts begun beside it take the cores it needs (in B9, 1 ->
                # 6 on two cores, the spare served 0.8-0.9 s after the decision).
                ready = min(missing, len(state.spares))
                activated = await asyncio.gather(
                    *(self._activate_spare(state) for _ in range(ready))
                )
                missing -= sum(activated)
                await asyncio.gather(*(self._add_worker(state, strict) for _ in range(missing)))
            elif live > state.target:
                victims = await self._choose_victims(state, live - state.target)
                await asyncio.gather(*(self._retire(state, name) for name in victims))
        surplus = list(state.spares)[self._spares_wanted(state) :]
        stopped = [(name, state.spares.pop(name)) for name in surplus]
        await asyncio.gather(*(self._stop_spare(name, handle) for name, handle in stopped))
        self._refill_later(state)

    async def _add_worker(self, state: _PoolState, strict: bool = False) -> None:
        """Activate a spare, or else create a worker and wait for it to start.

        Raises:
            PoolStartFailed: it did not start and ``strict`` (the bus's own start) is set.
        """
        if state.spares and await self._activate_spare(state):
            return
        name, handle = self._create(state)
        info = await self._bring_up(state, name, handle, handle.start)
        if info is None:
            if strict:
                raise PoolStartFailed(state.config.name, state.last_failure or "") from None
            self._retry_later(state)
            return
        logger.info("worker %s started on node %s", name, info.get("node_id", "?")[:8])
        self._watch_later(state, name, handle)

    async def _activate_spare(self, state: _PoolState) -> bool:
        name, handle = state.spares.popitem()
        if await self._bring_up(state, name, handle, handle.activate) is None:
            return False  # a new worker is started instead
        logger.info("spare %s of pool %s activated", name, state.config.name)
        return True

    async def _bring_up(
        self, state: _PoolState, name: str, handle: Any, step: Any
    ) -> dict[str, Any] | None:
        """Count ``name`` as a starting worker while ``step`` runs; forgotten if it fails."""
        state.workers[name] = handle
        state.starting.add(name)
        try:
            info = await self._started(state, name, handle, step)
        finally:
            state.starting.discard(name)
        if info is None:
            state.workers.pop(name, None)
        return info

    def _create(self, state: _PoolState) -> tuple[str, Any]:
        name = actor_names.worker(self._config.name, state.config.name)
        handle = WorkerActor.options(  # type: ignore[attr-defined]
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",
            scheduling_strategy="SPREAD",
            max_concurrency=10_000,
            **state.config.actor_options(),  # resources, node labels, runtime_env
        ).remote(self._config, state.config, name)
        return name, handle

    async def _started(
        self, state: _PoolState, name: str, handle: Any, step: Any
    ) -> dict[str, Any] | None:
        """Run a worker's start step (``start``, ``prepare``, ``activate``), bounded.

        Returns what the worker says about itself, or None after recording why it failed
        in ``state.last_failure`` and killing it.
        """
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                info: dict[str, Any] = await step.remote()
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
            ray.kill(handle)
            return None
        state.last_failure = None
        state.retry_delay_s = _RETRY_MIN_S
        return info

    def _spares_wanted(self, state: _PoolState) -> int:
        pool = state.config
        if self._stopping or not (self._config.autoscaler.enabled and pool.autoscale.enabled):
            return 0
        room = min(pool.max_workers, pool.autoscale.max_consumers or pool.max_workers)
        room = min(room, self._max_consumers or room) - state.target
        return max(0, min(pool.warm_spares, room))

    def _refill_later(self, state: _PoolState) -> None:
        if self._spares_held:
            return
        if state.refill is not None and not state.refill.done():
            return
        if len(state.spares) + len(state.spares_starting) < self._spares_wanted(state):
            state.refill = asyncio.get_running_loop().create_task(self._refill(state))

    async def _refill(self, state: _PoolState) -> None:
        """Start spares up to the wanted number; give up quietly until the next resize."""
        while len(state.spares) < self._spares_wanted(state):
            if not await self._fits_now(state.config):
                logger.info("pool %s: no room for a warm spare", state.config.name)
                return
            name, handle = self._create(state)
            state.spares_starting[name] = handle
            try:
                info = await self._started(state, name, handle, handle.prepare)
            finally:
                state.spares_starting.pop(name, None)
            if info is None:
                return  # no retry loop: the next resize tries again
            if len(state.spares) >= self._spares_wanted(state):
                await self._stop_spare(name, handle)  # no longer wanted (resized, stopping)
                return
            state.spares[name] = handle
            self._watch_later(state, name, handle)
            logger.info("spare %s of pool %s ready", name, state.config.name)

    async def _fits_now(self, pool: PoolConfig) -> bool:
        """Could one more worker of ``pool`` be placed now (free resources, labels)?"""
        if not (pool.worker_resources or pool.label_selector):
            return True
        room, _ = (await asyncio.to_thread(read_cluster)).room(pool)
        return room > 0

    async def _stop_spare(self, name: str, handle: Any) -> None:
        """Close a spare's server and kill it (it holds no calls)."""
        try:
            async with asyncio.timeout(_STOP_SPARE_TIMEOUT_S):
                await handle.drain.remote(0, _STOP_SPARE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - it is killed either way
            logger.warning("spare %s did not stop cleanly: %s", name, exc)
        finally:
            ray.kill(handle)

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
        prober = asyncio.get_running_loop().create_task(self._kill_when_unresponsive(name, handle))
        try:
            await handle.wait_stopped.remote()
        except Exception as exc:  # noqa: BLE001 - the actor died: replace it
            if state.spares.pop(name, None) is not None:
                logger.warning("spare %s died (%s)", name, type(exc).__name__)
                return
            if name in state.retiring or name not in state.workers:
                return
            logger.warning("worker %s died (%s); replacing it", name, type(exc).__name__)
            state.workers.pop(name, None)
            router = await self._handles.get_async(actor_names.router(self._config.name))
            await router.forget_worker.remote(name)
            await self._reconcile(state.config.name)
        finally:
            prober.cancel()

    async def _kill_when_unresponsive(self, name: str, handle: Any) -> None:
        """Kill ``name`` once it leaves a liveness probe unanswered for the discovery TTL.

        The kill ends :meth:`_watch`'s wait, which replaces the worker.
        """
        ttl_s = self._config.discovery.ttl_s
        while True:
            # A probe every half TTL: killed between 1 and 1.5 TTL after it went silent.
            await asyncio.sleep(ttl_s / 2)
            try:
                async with asyncio.timeout(ttl_s):
                    await handle.is_active.remote()
            except TimeoutError:
                logger.warning(
                    "worker %s answered nothing for %.1f s (its event loop is blocked?); "
                    "killing it",
                    name,
                    ttl_s,
                )
                ray.kill(handle)
                return
            except Exception:  # noqa: BLE001 - it died: _watch replaces it
                return

    async def _ask_router(self, method: str, *args: Any) -> Any:
        """A call to the router, again while Ray restarts it (bounded): a scale-down or
        the bus's shutdown met a router killed moments before, and failed with it."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + _ROUTER_BACK_S
        while True:
            router = await self._handles.get_async(actor_names.router(self._config.name))
            try:
                return await getattr(router, method).remote(*args)
            except ActorUnavailableError:
                if loop.time() >= give_up_at:
                    raise
                await asyncio.sleep(_ROUTER_RETRY_S)  # a period: Ray says nothing when it is back

    async def _choose_victims(self, state: _PoolState, count: int) -> list[str]:
        outstanding: dict[str, int] = await self._ask_router("outstanding")
        candidates = [
            n for n in state.workers if n not in state.retiring and n not in state.starting
        ]
        candidates.sort(key=lambda n: outstanding.get(n, 0))
        return candidates[:count]

    async def _retire(self, state: _PoolState, name: str) -> None:
        handle = state.workers.get(name)
        if handle is None:  # it died after it was chosen: the death watch has forgotten it
            return
        state.retiring.add(name)
        bus = self._config.name
        try:
            frames_sent = await self._ask_router("retire", name)
            try:
                finished = await handle.drain.remote(frames_sent, self._config.drain_timeout_s)
            except Exception as exc:  # noqa: BLE001 - it died (or was killed as unresponsive)
                logger.warning("worker %s died while draining: %s", name, type(exc).__name__)
                finished = True  # nothing left to wait for: forget_worker answers its calls
            if not finished:
                logger.warning("worker %s did not finish its calls before the drain timeout", name)
            await self._ask_router("forget_worker", name)
            discovery = await self._handles.get_async(actor_names.discovery(bus))
            await discovery.forget.remote(name.rsplit("/", 1)[-1])
        finally:
            ray.kill(handle)
            state.workers.pop(name, None)
            state.retiring.discard(name)
            logger.info("worker %s drained and stopped", name)
