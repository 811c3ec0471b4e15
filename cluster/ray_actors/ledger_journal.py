"""Keyed ledger entries in the GCS key-value store, so a restarted ledger keeps its keys.

Without it a ledger actor that Ray restarts forgets every idempotency key: a resend
after the restart would run its call a second time. :class:`LedgerJournal` keeps one
key per entry (``<bus>/<sha256 of the ledger key>`` in namespace ``raybus-ledger``; the
ledger key names a principal, so it is hashed rather than listed), its value a small
JSON record: state, digest, wall-clock stamp, base64 answer. The ledger writes a keyed
``begin`` before answering ``NEW`` (a restart then knows the call may be running), each
answer, and deletes a key it forgets (expired, evicted, abandoned).

An entry loaded in progress stays in progress: its run may still end and store its
answer; past the pool's longest run it is lost (1004, ``data.stage: "run"``), never run
again. Like the task store's journal it survives the actor and every node but the
head; a head restart loses it unless the GCS is fault tolerant. The calls are Ray's
underscore API (``ray.experimental.internal_kv``), wrapped here and nowhere else, and
blocking: each runs in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from dataclasses import dataclass

from ray.experimental import internal_kv

__all__ = ["JournalEntry", "LedgerJournal", "delete_ledger_journal"]

logger = logging.getLogger(__name__)

_NAMESPACE = "raybus-ledger"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One keyed entry as the journal keeps it."""

    key: str
    digest: str | None
    stamp_unix_s: float
    response: bytes | None  # None: in progress

    def to_json(self) -> bytes:
        answer = None if self.response is None else base64.b64encode(self.response).decode()
        record = {
            "key": self.key,
            "state": "in_progress" if self.response is None else "done",
            "digest": self.digest,
            "stamp": self.stamp_unix_s,
            "answer": answer,
        }
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> JournalEntry:
        record = json.loads(raw)
        answer = record.get("answer")
        response = None if answer is None else base64.b64decode(answer)
        return cls(str(record["key"]), record.get("digest"), float(record["stamp"]), response)


def _name(bus: str, key: str) -> str:
    return f"{bus}/{hashlib.sha256(key.encode()).hexdigest()}"


class LedgerJournal:
    """The keyed entries of one bus's ledger in GCS KV; see the module docstring."""

    def __init__(self, bus: str) -> None:
        self._bus = bus

    def read_all(self) -> list[JournalEntry]:
        """Every entry kept, oldest first (an unreadable one is skipped with a warning).

        Blocking: for a constructor, before its actor serves.
        """
        names = internal_kv._internal_kv_list(f"{self._bus}/", namespace=_NAMESPACE)
        values = (internal_kv._internal_kv_get(name, namespace=_NAMESPACE) for name in names)
        entries = []
        for raw in (value for value in values if value is not None):
            try:
                entries.append(JournalEntry.from_json(raw))
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning("skipped an unreadable ledger journal entry: %s", exc)
        return sorted(entries, key=lambda entry: entry.stamp_unix_s)

    async def put(self, key: str, digest: str | None, response: bytes | None) -> None:
        entry = JournalEntry(key, digest, time.time(), response)
        await asyncio.to_thread(
            internal_kv._internal_kv_put,
            _name(self._bus, key),
            entry.to_json(),
            True,
            namespace=_NAMESPACE,
        )

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(
            internal_kv._internal_kv_del, _name(self._bus, key), namespace=_NAMESPACE
        )


def delete_ledger_journal(bus: str) -> None:
    """Forget every keyed entry of a bus (a new ledger starts afresh). Blocking."""
    internal_kv._internal_kv_del(f"{bus}/", del_by_prefix=True, namespace=_NAMESPACE)
