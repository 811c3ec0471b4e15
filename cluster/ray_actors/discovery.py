"""The discovery registry as a Ray actor: heartbeats in, membership snapshots out.

Subscribers (the router) get the whole snapshot whenever servers join, leave, change
status or change what they offer, plus which lists changed (for list_changed).

After a Ray restart the registry is empty and knows no subscriber. Workers fill it again
with their next heartbeats; the bus's router is subscribed again once one TTL has passed
(by then every live worker has beaten, so the first snapshot it gets drops none of
them). Snapshots carry the registry's epoch, so the router takes the new registry's
snapshots even though their versions start again from zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from actors.discovery.catalog import Catalog, Collision
from actors.discovery.registry import DiscoveryRegistry, Heartbeat, Membership, WorkerInfo
from cluster.backends.base import HeartbeatFeed, backend_for
from cluster.config import BusConfig
from cluster.naming import HandleCache, actor_names
from cluster.ray_actors.restarts import restarted, start_itself

__all__ = ["DiscoveryActor"]

logger = logging.getLogger(__name__)

# The longest a list_changed long poll is held: a caller that vanished releases its wait
# by then at the latest.
_MAX_LIST_WAIT_S = 60.0


class DiscoveryActor:
    def __init__(self, config: BusConfig) -> None:
        self._config = config
        regions = config.router.regions
        self._registry = DiscoveryRegistry(
            ttl_s=config.discovery.ttl_s,
            regions=regions.pool_regions if regions is not None else None,
        )
        self._backend = backend_for(config)
        self._feed: HeartbeatFeed | None = None
        self._handles = HandleCache()
        self._subscribers: set[str] = set()
        self._published = -1
        self._changed = asyncio.Event()  # set, and replaced, at each beat (see _publish)
        self._evictor: asyncio.Task[None] | None = None
        self._resume_begun = False
        if restarted():
            start_itself("resume", lambda: self._resume_begun)

    async def start(self) -> None:
        if self._evictor is None:
            self._evictor = asyncio.get_running_loop().create_task(self._evict_forever())
            # Beats that do not arrive as calls (Kafka's discovery topic) come from a feed.
            self._feed = await self._backend.heartbeat_feed(self._record)

    async def resume(self) -> None:
        """After a Ray restart: evict again, and give the router the re-learned workers."""
        if self._resume_begun:
            return  # a resend (see start_itself)
        self._resume_begun = True
        await self.start()
        await asyncio.sleep(self._registry.ttl_s)  # one TTL: every live worker has beaten
        await self.subscribe(actor_names.router(self._config.name))
        logger.info("discovery re-learned %d workers", len(self._registry.live_workers()))

    def _record(self, beat: Heartbeat) -> None:
        self._registry.heartbeat(beat)
        self._publish()

    async def _evict_forever(self) -> None:
        while True:
            await asyncio.sleep(self._registry.ttl_s / 4)  # eviction period
            try:
                if self._registry.evict_stale():
                    self._publish()
            except Exception:  # the timer must survive one bad round
                logger.exception("discovery eviction failed")

    async def heartbeat(self, beat: Heartbeat) -> bool:
        """Record a heartbeat; True asks the worker to resend with its catalog."""
        await self.start()  # after a restart, the first heartbeat restarts eviction
        need_catalog = self._registry.heartbeat(beat)
        self._publish()
        return need_catalog

    async def forget(self, server_id: str) -> None:
        if self._registry.forget(server_id):
            self._publish()

    async def subscribe(self, actor_name: str) -> None:
        self._subscribers.add(actor_name)
        handle = await self._handles.get_async(actor_name)
        handle.on_membership.remote(self._registry.snapshot(), set())

    async def unsubscribe(self, actor_name: str) -> None:
        self._subscribers.discard(actor_name)
        self._handles.forget(actor_name)

    async def snapshot(self) -> Membership:
        return self._registry.snapshot()

    async def snapshot_since(self, epoch: str, version: int) -> Membership | None:
        """The snapshot, or None while ``(epoch, version)`` is current: a client that reads
        membership every second (cluster.backends.ray_direct) is sent it only on change."""
        registry = self._registry
        if epoch == registry.epoch and version == registry.version:
            return None
        return registry.snapshot()

    async def catalogs(self) -> dict[str, Catalog]:
        """Each pool's catalog as lists show it: a name two pools offer, at its owner only."""
        return self._registry.snapshot().listed

    async def collisions(self) -> list[Collision]:
        """Names two pools offer; the pool that offered each first keeps it."""
        return self._registry.snapshot().collisions

    async def list_changed(
        self, seen: dict[str, int] | None = None, wait_s: float = 0.0
    ) -> dict[str, int]:
        """Per kind (tool / prompt / resource), how many list changes were seen so far.

        A long poll when ``seen`` is given: answers once the counters differ from it, or
        after ``wait_s`` with them unchanged. A gateway replica waits here instead of
        asking four times a second (one actor call each, per replica, idle or not).
        """
        deadline = asyncio.get_running_loop().time() + min(wait_s, _MAX_LIST_WAIT_S)
        while True:
            changed = self._changed  # before reading: a change after it sets this one
            self._registry.changed_kinds()
            counters = dict(self._registry.list_changed_seq)
            remaining = deadline - asyncio.get_running_loop().time()
            if seen is None or counters != seen or remaining <= 0:
                return counters
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed.wait()

    async def workers(self) -> list[WorkerInfo]:
        return self._registry.live_workers()

    def _publish(self) -> None:
        # The list_changed long polls look again after every beat: a server's "my list
        # changed" may come with no change to the membership (the version below).
        self._changed.set()
        self._changed = asyncio.Event()
        if self._registry.version == self._published:
            return
        self._published = self._registry.version
        snapshot = self._registry.snapshot()
        changed = self._registry.changed_kinds()
        for name in list(self._subscribers):
            try:
                handle: Any = self._handles.get(name)
            except Exception:  # noqa: BLE001 - a vanished subscriber must not stop the rest
                logger.warning("subscriber %s is gone; unsubscribing", name)
                self._subscribers.discard(name)
                continue
            handle.on_membership.remote(snapshot, changed)
