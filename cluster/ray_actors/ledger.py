"""The pool-wide idempotency ledger as a Ray actor (one per bus).

Brokers deliver at least once; a worker asks the ledger before it runs a request, so a
redelivered request gets its stored answer again instead of running twice. Requests with
an idempotency key (README "Idempotency keys") are decided by that key, on every backend:
on Ray only they use the ledger (an unkeyed Ray call never asks it), so a Ray bus starts
the actor the first time a keyed call needs it (:func:`cluster.idempotency.ledger_handle`).
"""

from __future__ import annotations

import ray

from actors.ledger import PoolLedger
from transports.codec import encode_message
from transports.errors import BusErrorCode
from transports.message import Response

__all__ = ["LedgerActor"]

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
    ) -> None:
        self._ledgers = PoolLedger(ttl_s, max_entries, keyed_ttl_s, keyed_max_entries)
        self._ledger = self._ledgers.by_correlation

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
        return decision.kind.value, decision.response

    async def complete_keyed(self, key: str, response: bytes, alias: str | None = None) -> None:
        self._ledgers.complete_keyed(key, response, alias)

    async def abandon_keyed(self, key: str, alias: str | None = None) -> None:
        self._ledgers.abandon_keyed(key, alias)
