"""Idempotency keys on a bus: their settings and the ledger a worker asks about them.

``idempotency:`` in the bus configuration bounds how long and how many keys the bus
remembers (README "Idempotency keys"). A keyed request runs at most once for as long as
its key is remembered, on every backend: on a broker bus the ledger actor starts with
the bus (unkeyed calls use it too); on a Ray bus the first keyed call starts it
(:func:`keyed_runs_for`), so a Ray bus that never sees a key pays nothing for it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from actors.worker.keyed import Decided, KeyedLedgerPort, KeyedRuns
from cluster.naming import HandleCache, actor_names

if TYPE_CHECKING:
    from cluster.config import BusConfig

__all__ = [
    "LOST_MARGIN_S",
    "MIN_TTL_S",
    "IdempotencyConfig",
    "RayLedgerPort",
    "keyed_runs_for",
    "ledger_args",
]

# The edge client stops resending 300 s before the advertised TTL (design 4.4): a TTL
# shorter than twice that would leave it next to no resend window.
MIN_TTL_S = 600.0
# A run is bounded by its pool's timeout; past it by this much (a loaded machine's delay
# between the run's end and its answer's store), its key's worker is taken for lost.
LOST_MARGIN_S = 60.0
# Correlation keys of a ledger that only keyed calls use (a Ray bus): never asked, but
# the ledger needs a bound for them.
_RAY_CORRELATION_TTL_S = 600.0


class IdempotencyConfig(BaseModel):
    """``idempotency:``: how long and how many idempotency keys the bus remembers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttl_s: float = Field(86_400.0, description="how long a key and its answer are remembered")
    max_entries: int = Field(200_000, ge=1000, description="keys remembered; oldest evicted")
    durable: bool = Field(True, description="keys kept in GCS KV across a ledger restart")
    # Brokers use kafka/sqs.duplicate_wait_s; a Ray bus has no such section.
    duplicate_wait_s: float = Field(
        60.0, gt=0, description="Ray: how long a keyed resend waits for the first run"
    )

    @field_validator("ttl_s")
    @classmethod
    def _ttl(cls, value: float) -> float:
        if value < MIN_TTL_S:
            raise ValueError(
                f"must be at least {MIN_TTL_S:g} (the edge stops resending 300 s before it)"
            )
        return value


def ledger_args(config: BusConfig, ttl_s: float) -> tuple[float, int, float, int, str, bool]:
    """The :class:`~cluster.ray_actors.ledger.LedgerActor` arguments of a bus."""
    keyed = config.idempotency
    return ttl_s, 1_000_000, keyed.ttl_s, keyed.max_entries, config.name, keyed.durable


class RayLedgerPort:
    """:class:`~actors.worker.keyed.KeyedLedgerPort` over the ledger actor's handle."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def begin_keyed(
        self, key: str, digest: str, alias: str | None, lost_after_s: float | None
    ) -> Decided:
        decided: Decided = await self._handle.begin_keyed.remote(key, digest, alias, lost_after_s)
        return decided

    async def complete_keyed(self, key: str, response: bytes, alias: str | None) -> None:
        await self._handle.complete_keyed.remote(key, response, alias)

    async def abandon_keyed(self, key: str, alias: str | None) -> None:
        await self._handle.abandon_keyed.remote(key, alias)


def keyed_runs_for(config: BusConfig, handles: HandleCache, *, longest_run_s: float) -> KeyedRuns:
    """How a worker of ``config``'s Ray bus runs keyed requests (through the bus's ledger).

    ``longest_run_s`` bounds every run of the worker's pool: a key in progress for longer
    (plus :data:`LOST_MARGIN_S`) lost its worker.

    The ledger actor is looked up the first time a keyed request comes; on a Ray bus it
    is started then (``get_if_exists``: workers racing to start it share one).
    """
    name = actor_names.ledger(config.name)
    port: RayLedgerPort | None = None
    lock = asyncio.Lock()

    async def ledger() -> KeyedLedgerPort:
        nonlocal port
        async with lock:
            if port is None:
                port = RayLedgerPort(await _ledger_handle(config, handles, name))
        return port

    wait_s = config.idempotency.duplicate_wait_s
    return KeyedRuns(ledger, wait_s, longest_run_s + LOST_MARGIN_S)


async def _ledger_handle(config: BusConfig, handles: HandleCache, name: str) -> Any:
    if config.backend != "ray":  # started with the bus
        return await handles.get_async(name)
    # Imported here: the actor class pulls Ray's remote machinery into the importer.
    from cluster.ray_actors.ledger import LedgerActor
    from cluster.ray_actors.restarts import CONTROL_ACTOR_OPTIONS

    def get_or_start() -> Any:
        options = {**CONTROL_ACTOR_OPTIONS, "name": name, "get_if_exists": True}
        return LedgerActor.options(**options).remote(  # type: ignore[attr-defined]
            *ledger_args(config, _RAY_CORRELATION_TTL_S)
        )

    handle = await asyncio.to_thread(get_or_start)
    handles.put(name, handle)
    return handle
