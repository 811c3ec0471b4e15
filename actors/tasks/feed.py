"""The task store's change feed: which tasks changed status, for whoever pushes status
notifications (the gateway's ``notifications/tasks/status`` and ``notifications/tasks``).

One long poll serves every task: a gateway replica holds one cursor and asks
:meth:`ChangeFeed.changes` in a loop, instead of one ``wait`` per task. A change is a
new status, a tool's ``isError`` result (``failed`` on 2025-11-25), another set of
outstanding input requests, or new progress: a 2025-11-25 task's creator hears its
progress under the request's ``progressToken`` ("Task Progress Notifications"). The
feed keeps one entry per task, its latest, so progress at any rate costs a reader one
record per task per read; 2026 listeners skip progress-only changes (the extension
keeps progress off the listen stream).

Each store incarnation has its own ``epoch``. A cursor of another epoch (the store was
restarted) reads the new incarnation's whole feed, which starts with every task it
loaded from its journal: the reader learns the status of each task as journaled and
pushes those that differ from what it last pushed. The feed keeps the latest change of
at most ``max_kept`` tasks (one entry per task; the oldest are forgotten first).

Records in the feed are summaries (:func:`summary`): no arguments, no result body, no
routes to workers. A reader that needs a task's result asks the store for the task.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from actors.tasks.model import TaskRecord

__all__ = ["ChangeFeed", "FeedBatch", "FeedCursor", "progress_key", "status_key", "summary"]

_BATCH = 256


@dataclass(frozen=True)
class FeedCursor:
    """Where a reader is: the store incarnation it read and the last change it saw."""

    epoch: str
    seq: int


@dataclass(frozen=True)
class FeedBatch:
    """Changes after a cursor, oldest first; ``cursor`` is where the next read starts."""

    cursor: FeedCursor
    records: tuple[TaskRecord, ...]


def status_key(record: TaskRecord) -> tuple[str, bool, tuple[str, ...]]:
    """What a status notification is about: a reader pushes when this changes."""
    outcome = record.outcome or {}
    result = outcome.get("result")
    is_error = isinstance(result, dict) and bool(result.get("isError"))
    return (str(record.status), is_error, tuple(sorted(record.input_requests)))


def progress_key(record: TaskRecord) -> tuple[float | None, float | None, str | None]:
    """What a progress notification is about."""
    return (record.progress, record.total, record.status_message)


def summary(record: TaskRecord) -> TaskRecord:
    """The record without what is big or private: arguments, result body, input routes."""
    outcome: dict[str, Any] | None = None
    if record.outcome is not None:
        result = record.outcome.get("result")
        if isinstance(result, dict):
            outcome = {"result": {"isError": bool(result.get("isError"))}}
        elif "error" in record.outcome:
            outcome = {"error": record.outcome["error"]}
    return replace(record, arguments={}, outcome=outcome, input_routes={}, call_params={})


class ChangeFeed:
    def __init__(self, *, max_kept: int = 10_000, epoch: str | None = None) -> None:
        self.epoch = epoch if epoch is not None else secrets.token_hex(8)
        self._max_kept = max_kept
        self._seq = 0
        # task id -> (seq of its latest change, its summary); ordered by seq.
        self._latest: OrderedDict[str, tuple[int, TaskRecord]] = OrderedDict()
        self._more = asyncio.Event()

    def note(self, before: TaskRecord | None, after: TaskRecord) -> None:
        """``after`` replaced ``before`` (None: loaded or created); kept if its status
        or its progress changed."""
        if (
            before is not None
            and status_key(before) == status_key(after)
            and progress_key(before) == progress_key(after)
        ):
            return
        self._seq += 1
        self._latest.pop(after.task_id, None)
        self._latest[after.task_id] = (self._seq, summary(after))
        while len(self._latest) > self._max_kept:
            self._latest.popitem(last=False)
        self._more.set()
        self._more = asyncio.Event()

    async def changes(self, cursor: FeedCursor | None, timeout_s: float) -> FeedBatch:
        """Changes after ``cursor``, waiting up to ``timeout_s`` for one.

        None starts a reader at the feed's end (it answers at once, empty); a cursor of
        another incarnation reads this one's feed from its start.
        """
        if cursor is None:
            return FeedBatch(FeedCursor(self.epoch, self._seq), ())
        after = cursor.seq if cursor.epoch == self.epoch else 0
        if self._seq <= after:
            waiting = self._more
            try:
                async with asyncio.timeout(timeout_s):
                    await waiting.wait()
            except TimeoutError:
                return FeedBatch(FeedCursor(self.epoch, after), ())
        newer: list[tuple[int, TaskRecord]] = []
        for seq, record in reversed(self._latest.values()):
            if seq <= after:
                break
            newer.append((seq, record))
        newer.reverse()
        batch = newer[:_BATCH]
        last = batch[-1][0] if batch else self._seq
        return FeedBatch(FeedCursor(self.epoch, last), tuple(r for _, r in batch))
