"""Where task records outlive the store that holds them: the :class:`Journal` port.

The store writes a record before anyone learns its task id (a ``tasks/get`` for an id
that was handed out must resolve, even from a restarted store: the 2026-07-28 extension's
"durably created") and after every status change; a restarted store loads them all.
Implementations live with the infrastructure they use (``cluster/tasks/journals.py``:
Ray's GCS key-value store); :class:`MemoryJournal` serves unit tests.
"""

from __future__ import annotations

from typing import Protocol

from actors.tasks.model import TaskRecord

__all__ = ["Journal", "MemoryJournal"]


class Journal(Protocol):
    async def load(self) -> list[TaskRecord]:
        """Every record written and not deleted (the last write of each task)."""
        ...

    async def put(self, record: TaskRecord) -> None:
        """Write (or overwrite) one record; returns once it is durable."""
        ...

    async def delete(self, task_id: str) -> None:
        """Forget one task (its TTL passed); deleting an unknown id is not an error."""
        ...


class MemoryJournal:
    """Records as JSON in a dict: what a restart would reload, without any service."""

    def __init__(self) -> None:
        self.records: dict[str, str] = {}
        self.writes = 0

    async def load(self) -> list[TaskRecord]:
        return [TaskRecord.from_json(text) for text in self.records.values()]

    async def put(self, record: TaskRecord) -> None:
        self.writes += 1
        self.records[record.task_id] = record.to_json()

    async def delete(self, task_id: str) -> None:
        self.records.pop(task_id, None)
