"""The autoscaler actor: every interval, read each pool's lag and resize it.

Signals come from the bus's backend (:meth:`~cluster.backends.base.Backend.lag`): the
router's queue with Ray, the pool group's lag with Kafka, the queue depth with SQS; each
plus the calls in flight. Decisions are made by the pool's policy and applied
through the supervisor, one resize at a time per pool (a pool being resized holds its
size). Every decision is kept, newest last, for ``raybus status``.

For pools whose workers reserve resources (CPUs, GPUs, memory, custom ones) or need
labelled nodes, the cluster is read once per round (:func:`cluster.placement.read_cluster`:
each node's labels and free resources) and shared out in the round's order: a pool's
room is how many more of its workers its usable nodes can run, plus its own warm spares
(activating a spare needs nothing new), after what pools decided earlier in the round
will take.

Each round's decisions are counted by direction (a metric: the pools' workers and lag are
the supervisor's), exported to Ray every second and handed to ``raybus up --metrics-port``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import asdict
from typing import Any

import ray

from actors.autoscaler import Decision, LagPolicy, ScalingPolicy, Signals
from cluster.backends.base import backend_for
from cluster.config import BusConfig, PoolConfig
from cluster.metrics.ray_export import RayExport, export_forever
from cluster.metrics.recorders import AutoscalerRecorder
from cluster.metrics.registry import FamilySnapshot, MetricsRegistry
from cluster.naming import HandleCache, actor_names
from cluster.placement import ClusterReading, read_cluster
from cluster.ray_actors.restarts import restarted, start_itself
from transports.errors import BusError

__all__ = ["AutoscalerActor"]

logger = logging.getLogger(__name__)


class AutoscalerActor:
    def __init__(self, config: BusConfig) -> None:
        self._config = config
        self._handles = HandleCache()
        self._backend = backend_for(config)
        # Workers beyond the backend's cap would sit idle (Kafka: the topic's partitions).
        partitions = self._backend.max_consumers
        self._policies: dict[str, ScalingPolicy] = {
            pool.name: LagPolicy(
                pool.autoscale,
                pool.min_workers,
                min(
                    pool.max_workers, pool.autoscale.max_consumers or partitions or pool.max_workers
                ),
                limited_by_cluster=_limited_by_cluster(pool),
            )
            for pool in config.pools
            if pool.autoscale.enabled
        }
        self._limited = {
            pool.name: pool
            for pool in config.pools
            if pool.name in self._policies and _limited_by_cluster(pool)
        }
        self._decisions: deque[Decision] = deque(maxlen=config.autoscaler.decisions_kept)
        # Resizes are rare and matter most: kept apart so routine holds never push them out.
        self._changes: deque[Decision] = deque(maxlen=config.autoscaler.decisions_kept)
        self._resizing: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.Task[None] | None = None
        self._metrics = MetricsRegistry(config.name)
        self._recorder = AutoscalerRecorder(self._metrics)
        self._exporter: asyncio.Task[None] | None = None
        if restarted():  # the launcher started the first one; a Ray restart starts itself
            start_itself("start", lambda: self._loop is not None)

    async def start(self) -> None:
        """Start deciding every interval (once; again by itself after a Ray restart)."""
        if self._loop is None:
            loop = asyncio.get_running_loop()
            self._loop = loop.create_task(self._run())
            self._exporter = loop.create_task(export_forever(RayExport(self._metrics)))

    async def stop(self) -> None:
        """Stop deciding and close the backend's lag clients (the bus is stopping: no
        resize while its pools drain)."""
        tasks = [task for task in (self._loop, self._exporter) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._backend.close()

    async def _run(self) -> None:
        interval = self._config.autoscaler.interval_s
        while True:
            try:
                await self.tick()
            except Exception:  # the control loop must outlive one bad round
                logger.exception("autoscaler round failed")
            await asyncio.sleep(interval)  # the control period

    async def tick(self) -> list[Decision]:
        """One round: read signals, decide, start resizes. Returns this round's decisions."""
        bus = self._config.name
        supervisor = await self._handles.get_async(actor_names.supervisor(bus))
        timeout = self._config.autoscaler.interval_s * 4
        lag: dict[str, dict[str, Any]] = {}
        try:
            async with asyncio.timeout(timeout):
                lag = await self._backend.lag(self._handles, list(self._policies))
        except (TimeoutError, ray.exceptions.RayError, BusError) as exc:
            logger.warning("no lag signals (%s): holding every pool", exc)
        async with asyncio.timeout(timeout):
            pools: dict[str, dict[str, Any]] = await supervisor.pools.remote()
        reading = await self._read_cluster()
        now = time.monotonic()
        made = []
        for pool, policy in self._policies.items():
            current = pools.get(pool, {}).get("target", 0)
            spares = pools.get(pool, {}).get("spares", 0)
            if pool in self._resizing:
                continue  # the previous resize is still converging: hold
            limited = self._limited.get(pool)
            room, note = (None, "")
            if reading is not None and limited is not None:
                fits, note = reading.room(limited)
                room = fits + spares
            signals = _signals(lag.get(pool), now, room, note, spares)
            decision = policy.decide(pool, current, signals)
            if reading is not None and limited is not None:
                new_workers = max(0, decision.desired - current - spares)
                reading = reading.after_placing(limited, new_workers)
            self._decisions.append(decision)
            if decision.desired != current:
                self._changes.append(decision)
            made.append(decision)
            if decision.desired != current:
                logger.info(
                    "scaling pool %s %d -> %d: %s", pool, current, decision.desired, decision.reason
                )
                task = asyncio.get_running_loop().create_task(
                    self._resize(supervisor, pool, decision.desired)
                )
                self._resizing[pool] = task
        self._recorder.round(made)
        return made

    async def _read_cluster(self) -> ClusterReading | None:
        """The nodes' labels and free resources, if a pool is limited by them (else None)."""
        if not self._limited:
            return None
        try:
            return await asyncio.to_thread(read_cluster)
        except Exception as exc:  # noqa: BLE001 - no reading: those pools hold their size
            logger.warning("no resource reading (%s)", exc)
            return None

    async def _resize(self, supervisor: Any, pool: str, size: int) -> None:
        try:
            await supervisor.scale.remote(pool, size)
        except Exception:  # the next round retries from fresh signals
            logger.exception("resizing pool %s to %d failed", pool, size)
        finally:
            self._resizing.pop(pool, None)

    async def metrics_snapshot(self) -> list[FamilySnapshot]:
        """Decisions per pool by direction (for ``raybus up --metrics-port``)."""
        return self._metrics.snapshot()

    async def decisions(
        self, last: int = 50, *, changes_only: bool = False
    ) -> list[dict[str, Any]]:
        """The most recent decisions (or resizes only), oldest first, as plain data."""
        recent = list(self._changes if changes_only else self._decisions)[-last:]
        return [_as_dict(d) for d in recent]


def _limited_by_cluster(pool: PoolConfig) -> bool:
    """Does the pool's size depend on what the cluster's nodes hold (resources, labels)?"""
    return bool(pool.worker_resources or pool.label_selector)


def _signals(
    lag: dict[str, Any] | None, now: float, room: int | None, room_note: str, spares: int
) -> Signals | None:
    if lag is None:
        return None
    return Signals(
        at_s=now,
        queued=lag["queued"],
        in_flight=lag["in_flight"],
        oldest_age_s=lag["oldest_age_s"],
        # Broker backends have no completed-calls counter: the saturation rule skips them.
        completed=lag.get("completed"),
        workers=lag.get("workers"),
        room=room,
        room_note=room_note,
        spares=spares,
    )


def _as_dict(decision: Decision) -> dict[str, Any]:
    data = asdict(decision)
    data["wall_time"] = time.time() - (time.monotonic() - decision.at_s)
    return data
