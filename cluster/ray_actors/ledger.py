"""The pool-wide idempotency ledger as a Ray actor (one per bus on a broker backend).

Brokers deliver at least once; a worker asks the ledger before it runs a request, so a
redelivered request gets its stored answer again instead of running twice.
"""

from __future__ import annotations

import ray

from actors.ledger import DecisionKind, DedupLedger

__all__ = ["LedgerActor"]


@ray.remote
class LedgerActor:
    """The pool-wide idempotency ledger (one per bus): request key -> running / done."""

    def __init__(self, ttl_s: float, max_entries: int = 1_000_000) -> None:
        self._ledger = DedupLedger(max_entries=max_entries, ttl_s=ttl_s)

    async def begin(self, key: str) -> tuple[str, bytes | None]:
        decision = self._ledger.begin(key)
        return decision.kind.value, decision.response

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
