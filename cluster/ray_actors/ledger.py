"""The pool-wide idempotency ledger as a Ray actor (one per bus).

Brokers deliver at least once; a worker asks the ledger before it runs a request, so a
redelivered request gets its stored answer again instead of running twice. Requests with
an idempotency key (README "Idempotency keys") are decided by that key, on every backend:
on Ray only they use the ledger (an unkeyed Ray call never asks it), so a Ray bus starts
the actor the first time a keyed call needs it (:func:`cluster.idempotency.ledger_handle`).
"""

from __future__ import annotations

import logging
import time

import ray

from actors.ledger import DecisionKind, PoolLedger
from cluster.ray_actors.ledger_journal import LedgerJournal, delete_ledger_journal
from cluster.ray_actors.restarts import restarted
from transports.codec import encode_message
from transports.errors import BusErrorCode
from transports.message import Response

__all__ = ["LedgerActor"]

logger = logging.getLogger(__name__)

# What a worker answers (from the ledger, to nobody listening) when it takes a request
# its caller cancelled before any worker began it.
_WITHDRAWN = encode_message(
    Response.failure(None, BusErrorCode.CANCELLED, "cancelled before a worker took it")
)

Decided = tuple[str, bytes | None]


@ray.remote
class LedgerActor:
    """The pool-wide idempotency ledger (one per bus): request key -> running / done."""

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 1_000_000,
        keyed_ttl_s: float = 86_400.0,
        keyed_max_entries: int = 200_000,
        bus: str | None = None,
        durable: bool = False,
    ) -> None:
        self._forgotten: list[str] = []
        self._ledgers = PoolLedger(
            ttl_s,
            max_entries,
            keyed_ttl_s,
            keyed_max_entries,
            on_forget_keyed=self._forgotten.append,
        )
        self._ledger = self._ledgers.by_correlation
        # Keyed entries journaled to GCS KV (idempotency.durable): a restart reloads them,
        # a first start clears what an earlier bus of this name left.
        self._journal = LedgerJournal(bus) if bus is not None and durable else None
        if self._journal is not None and bus is not None:
            if restarted():
                self._reload(self._journal)
            else:
                delete_ledger_journal(bus)

    async def begin(self, key: str) -> Decided:
        decision = self._ledger.begin(key)
        return decision.kind.value, decision.response

    async def begin_many(self, keys: list[str]) -> list[Decided]:
        """:meth:`begin` for each key, in order (a worker's concurrent requests at once)."""
        decisions = [self._ledger.begin(key) for key in keys]
        return [(decision.kind.value, decision.response) for decision in decisions]

    async def complete_many(self, answers: list[tuple[str, bytes]]) -> list[None]:
        """:meth:`complete` for each (key, answer), in order."""
        for key, response in answers:
            self._ledger.complete(key, response)
        return [None] * len(answers)

    async def peek(self, key: str) -> Decided:
        """Like begin, but never claims a key that is not there ("missing")."""
        decision = self._ledger.peek(key)
        if decision is None:
            return "missing", None
        return decision.kind.value, decision.response

    async def complete(self, key: str, response: bytes) -> None:
        self._ledger.complete(key, response)

    async def abandon(self, key: str) -> None:
        self._ledger.abandon(key)

    async def withdraw(self, key: str) -> bool:
        """A cancelled call: one no worker has begun is marked done, so none ever runs it.

        Returns whether it was withdrawn (False: a worker runs or ran it; the caller
        tells the workers to cancel it).
        """
        return self._ledgers.withdraw(key, _WITHDRAWN)

    # -- keyed requests (actors.worker.keyed) -----------------------------------------

    async def begin_keyed(
        self, key: str, digest: str, alias: str | None = None, lost_after_s: float | None = None
    ) -> Decided:
        decision = self._ledgers.begin_keyed(key, digest, alias, lost_after_s)
        if self._journal is not None and decision.kind is DecisionKind.NEW:
            # Kept before the worker hears NEW: a restart then knows it may be running.
            await self._journal.put(key, digest, None)
        await self._forget_journaled()
        return decision.kind.value, decision.response

    async def complete_keyed(self, key: str, response: bytes, alias: str | None = None) -> None:
        self._ledgers.complete_keyed(key, response, alias)
        if self._journal is not None:
            held = self._ledgers.keyed.entry(key)
            await self._journal.put(key, held[0] if held is not None else None, response)
        await self._forget_journaled()

    async def abandon_keyed(self, key: str, alias: str | None = None) -> None:
        self._ledgers.abandon_keyed(key, alias)
        if self._journal is not None:
            await self._journal.delete(key)

    def _reload(self, journal: LedgerJournal) -> None:
        # The constructor runs before the actor serves: blocking here delays only it.
        entries = journal.read_all()
        now = time.time()
        for entry in entries:
            self._ledgers.keyed.restore(
                entry.key, now - entry.stamp_unix_s, entry.digest, entry.response
            )
        logger.info("ledger reloaded %d keyed entries", len(self._ledgers.keyed))

    async def _forget_journaled(self) -> None:
        """Delete the journal's copies of keys the ledger forgot (expired, evicted)."""
        forgotten, self._forgotten[:] = list(self._forgotten), []
        if self._journal is not None:
            for key in forgotten:
                await self._journal.delete(key)
