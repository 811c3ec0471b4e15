"""The pool-wide idempotency ledger as a Ray actor (one per bus on a broker backend).

Brokers deliver at least once; a worker asks the ledger before it runs a request, so a
redelivered request gets its stored answer again instead of running twice.
"""

from __future__ import annotations

import ray

from actors.ledger import DecisionKind, DedupLedger
from transports.codec import encode_message
from transports.errors import BusErrorCode
from transports.message import Response

__all__ = ["LedgerActor"]

# What a worker answers (from the ledger, to nobody listening) when it takes a request
# its caller cancelled before any worker began it.
_WITHDRAWN = encode_message(
    Response.failure(None, BusErrorCode.CANCELLED, "cancelled before a worker took it")
)


@ray.remote
class LedgerActor:
    """The pool-wide idempotency ledger (one per bus): request key -> running / done."""

    def __init__(self, ttl_s: float, max_entries: int = 1_000_000) -> None:
        self._ledger = DedupLedger(max_entries=max_entries, ttl_s=ttl_s)

    async def begin(self, key: str) -> tuple[str, bytes | None]:
        decision = self._ledger.begin(key)
        return decision.kind.value, decision.response

    async def begin_many(self, keys: list[str]) -> list[tuple[str, bytes | None]]:
        """:meth:`begin` for each key, in order (a worker's concurrent requests at once)."""
        decisions = [self._ledger.begin(key) for key in keys]
        return [(decision.kind.value, decision.response) for decision in decisions]

    async def complete_many(self, answers: list[tuple[str, bytes]]) -> list[None]:
        """:meth:`complete` for each (key, answer), in order."""
        for key, response in answers:
            self._ledger.complete(key, response)
        return [None] * len(answers)

    async def peek(self, key: str) -> tuple[str, bytes | None]:
        """Like begin, but never claims a key that is not there."""
        kind, response = self._peek(key)
        return kind, response

    def _peek(self, key: str) -> tuple[str, bytes | None]:
        entry = self._ledger._entries.get(key)
        if entry is None:
            return "missing", None
        return (
            (DecisionKind.DONE.value, entry.response)
            if entry.response is not None
            else (
                DecisionKind.IN_PROGRESS.value,
                None,
            )
        )

    async def complete(self, key: str, response: bytes) -> None:
        self._ledger.complete(key, response)

    async def abandon(self, key: str) -> None:
        self._ledger.abandon(key)

    async def withdraw(self, key: str) -> bool:
        """A cancelled call: one no worker has begun is marked done, so none ever runs it.

        Returns whether it was withdrawn (False: a worker runs or ran it; the caller
        tells the workers to cancel it).
        """
        if self._ledger.begin(key).kind is not DecisionKind.NEW:
            return False
        self._ledger.complete(key, _WITHDRAWN)
        return True
