"""The registry of live MCP servers, fed by heartbeats, with a TTL.

Pure logic with an injected clock; the Ray actor around it (``cluster``) runs the
eviction timer and publishes :class:`Membership` snapshots to subscribers (the router,
the gateway) whenever the set of servers, their status or their catalog changes. Load
alone never triggers a publish: the router counts its own in-flight calls.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from actors.discovery.catalog import CapabilityIndex, Catalog, Collision, Kind

__all__ = [
    "DiscoveryRegistry",
    "Heartbeat",
    "Membership",
    "ServerStatus",
    "WorkerInfo",
    "without_workers",
]

logger = logging.getLogger(__name__)


class ServerStatus(StrEnum):
    ONLINE = "online"
    BUSY = "busy"
    DRAINING = "draining"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a worker says about itself; ``catalog`` only when its digest changed."""

    server_id: str
    pool: str
    actor_name: str
    status: ServerStatus
    in_flight: int
    catalog_digest: str
    capacity: int = 1
    catalog: Catalog | None = None
    node_id: str = ""
    list_changed: tuple[str, ...] = ()  # kinds the server announced as changed since last beat

    def to_json(self) -> bytes:
        """The heartbeat as a JSON record (for a broker's discovery topic)."""
        wire = {
            "server_id": self.server_id,
            "pool": self.pool,
            "actor_name": self.actor_name,
            "status": str(self.status),
            "in_flight": self.in_flight,
            "catalog_digest": self.catalog_digest,
            "capacity": self.capacity,
            "node_id": self.node_id,
            "list_changed": list(self.list_changed),
        }
        if self.catalog is not None:
            wire["catalog"] = {
                "tools": list(self.catalog.tools),
                "resources": list(self.catalog.resources),
                "resource_templates": list(self.catalog.resource_templates),
                "prompts": list(self.catalog.prompts),
            }
        return json.dumps(wire, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Heartbeat:
        """Read :meth:`to_json` output back.

        Raises:
            ValueError: not a heartbeat record.
        """
        wire = json.loads(data)
        catalog = Catalog.of(**wire["catalog"]) if "catalog" in wire else None
        if catalog is not None and catalog.digest != wire["catalog_digest"]:
            raise ValueError("heartbeat catalog does not match its digest")
        return cls(
            server_id=str(wire["server_id"]),
            pool=str(wire["pool"]),
            actor_name=str(wire["actor_name"]),
            status=ServerStatus(wire["status"]),
            in_flight=int(wire["in_flight"]),
            catalog_digest=str(wire["catalog_digest"]),
            capacity=int(wire["capacity"]),
            catalog=catalog,
            node_id=str(wire.get("node_id", "")),
            list_changed=tuple(wire.get("list_changed", ())),
        )


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    server_id: str
    pool: str
    actor_name: str
    status: ServerStatus
    in_flight: int
    capacity: int
    node_id: str
    last_seen_s: float


@dataclass(frozen=True)
class Membership:
    """A versioned snapshot: live workers per pool and who serves what."""

    version: int
    workers: dict[str, tuple[WorkerInfo, ...]]
    catalogs: dict[str, Catalog]
    index: CapabilityIndex = field(default_factory=CapabilityIndex)
    # Which registry counted ``version``: a registry started anew (its actor restarted)
    # counts from zero again, so versions compare only within one epoch.
    epoch: str = ""
    # What lists show: ``catalogs`` without the names another pool keeps (collisions).
    listed: dict[str, Catalog] = field(default_factory=dict)

    def pool_for(self, kind: str, name: str) -> str | None:
        return self.index.pool_for(kind, name)

    @property
    def collisions(self) -> list[Collision]:
        """Names two pools offer; the pool that offered each first keeps it."""
        return self.index.collisions


def without_workers(membership: Membership, gone: set[str]) -> Membership:
    """``membership`` less the workers named in ``gone`` (actor names)."""
    workers = {
        pool: tuple(info for info in infos if info.actor_name not in gone)
        for pool, infos in membership.workers.items()
    }
    return dataclasses.replace(membership, workers=workers)


@dataclass
class _Entry:
    info: WorkerInfo
    digest: str


class DiscoveryRegistry:
    def __init__(
        self,
        ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        regions: Mapping[str, str | None] | None = None,
    ) -> None:
        """
        Args:
            regions: each pool's region from the configuration (``router.regions``): pools
                of different regions offering one name are replicas, not a collision.
        """
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self.ttl_s = ttl_s
        self._clock = clock
        self._regions = regions
        self._entries: dict[str, _Entry] = {}
        self._catalogs: dict[str, Catalog] = {}  # digest -> catalog
        self._pool_order: dict[str, int] = {}
        # A pool keeps its last catalog when its last worker goes: calls for its tools
        # still route (and queue), which is what wakes a pool scaled to zero.
        self._pool_digest: dict[str, str] = {}
        self.version = 0
        self.epoch = uuid.uuid4().hex
        self._snapshot: Membership | None = None
        self._last_catalog_view: dict[str, frozenset[tuple[str, str]]] = {}
        self._collisions_logged: set[Collision] = set()
        self._index: CapabilityIndex | None = None  # who owns each name, kept across changes
        self.list_changed_seq: dict[str, int] = {Kind.TOOL: 0, Kind.PROMPT: 0, Kind.RESOURCE: 0}

    def heartbeat(self, beat: Heartbeat) -> bool:
        """Record a heartbeat. Returns True when the registry needs the full catalog."""
        for kind in beat.list_changed:
            if kind in self.list_changed_seq:
                self.list_changed_seq[kind] += 1
        if beat.catalog is not None:
            self._catalogs[beat.catalog_digest] = beat.catalog
        if beat.catalog_digest not in self._catalogs:
            return True
        now = self._clock()
        info = WorkerInfo(
            server_id=beat.server_id,
            pool=beat.pool,
            actor_name=beat.actor_name,
            status=beat.status,
            in_flight=beat.in_flight,
            capacity=beat.capacity,
            node_id=beat.node_id,
            last_seen_s=now,
        )
        previous = self._entries.get(beat.server_id)
        self._entries[beat.server_id] = _Entry(info, beat.catalog_digest)
        self._pool_order.setdefault(beat.pool, len(self._pool_order))
        if self._pool_digest.get(beat.pool) != beat.catalog_digest:
            self._pool_digest[beat.pool] = beat.catalog_digest
            self._changed()
        if (
            previous is None
            or previous.digest != beat.catalog_digest
            or previous.info.status != beat.status
        ):
            if previous is None:
                logger.info("server %s joined pool %s", beat.server_id, beat.pool)
            self._changed()
        return False

    def forget(self, server_id: str) -> bool:
        """Remove a server now (it exited cleanly). Returns whether it was known."""
        if self._entries.pop(server_id, None) is None:
            return False
        self._changed()
        return True

    def evict_stale(self) -> list[str]:
        """Drop servers silent for longer than the TTL; returns their ids."""
        horizon = self._clock() - self.ttl_s
        stale = [sid for sid, e in self._entries.items() if e.info.last_seen_s < horizon]
        for server_id in stale:
            logger.warning("server %s missed heartbeats for %.1f s: evicted", server_id, self.ttl_s)
            del self._entries[server_id]
        if stale:
            self._changed()
        return stale

    def live_workers(self) -> list[WorkerInfo]:
        return [e.info for e in self._entries.values()]

    def snapshot(self) -> Membership:
        if self._snapshot is None:
            workers: dict[str, list[WorkerInfo]] = {}
            pool_catalog: dict[str, Catalog] = {}
            for entry in self._entries.values():
                workers.setdefault(entry.info.pool, []).append(entry.info)
                pool_catalog.setdefault(entry.info.pool, self._catalogs[entry.digest])
            for pool, digest in self._pool_digest.items():
                pool_catalog.setdefault(pool, self._catalogs[digest])
            # In registration order: lists show the entry of the pool that routing uses.
            ordered = sorted(pool_catalog.items(), key=lambda kv: self._pool_order[kv[0]])
            index = self._index = CapabilityIndex.build(ordered, self._index, self._regions)
            self._log_new_collisions(index.collisions)
            self._snapshot = Membership(
                version=self.version,
                workers={pool: tuple(ws) for pool, ws in workers.items()},
                catalogs=dict(ordered),
                index=index,
                epoch=self.epoch,
                listed={pool: index.shown(pool, catalog) for pool, catalog in ordered},
            )
        return self._snapshot

    def _log_new_collisions(self, collisions: list[Collision]) -> None:
        for collision in collisions:
            if collision not in self._collisions_logged:
                # A namespace separates tool and prompt names; URIs are never rewritten.
                hint = "" if collision.kind == Kind.RESOURCE else " (give one pool a namespace)"
                logger.warning("%s%s", collision, hint)
        self._collisions_logged = set(collisions)

    def changed_kinds(self) -> set[str]:
        """Which lists (tools / prompts / resources) changed since the last call."""
        snapshot = self.snapshot()
        view = {
            kind: frozenset(
                (pool, name) for pool, c in snapshot.catalogs.items() for name in c.names(kind)
            )
            for kind in (Kind.TOOL, Kind.PROMPT, Kind.RESOURCE)
        }
        changed = {k for k, names in view.items() if self._last_catalog_view.get(k) != names}
        self._last_catalog_view = view
        for kind in changed:
            self.list_changed_seq[kind] += 1
        return changed

    def _changed(self) -> None:
        self.version += 1
        self._snapshot = None
