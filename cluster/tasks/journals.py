"""Task journals on Ray: records in the GCS key-value store, so a restarted store reloads.

:class:`GcsKvJournal` keeps one key per task (``<bus>/<task id>`` in namespace
``raybus-tasks``), its value the record's JSON. It survives the store actor's death and
every node but the head; a head restart loses it unless the GCS is fault tolerant
(external Redis). Ray Serve's controller checkpoints to the same store. The calls are
Ray's underscore API (``ray.experimental.internal_kv``), wrapped here and nowhere else,
and blocking: each runs in a thread.
"""

from __future__ import annotations

import asyncio

from ray.experimental import internal_kv

from actors.tasks.model import TaskRecord

__all__ = ["GcsKvJournal", "delete_journal"]

_NAMESPACE = "raybus-tasks"


class GcsKvJournal:
    def __init__(self, bus: str) -> None:
        self._prefix = f"{bus}/"

    async def load(self) -> list[TaskRecord]:
        def read_all() -> list[bytes]:
            keys = internal_kv._internal_kv_list(self._prefix, namespace=_NAMESPACE)
            values = (internal_kv._internal_kv_get(key, namespace=_NAMESPACE) for key in keys)
            return [value for value in values if value is not None]

        return [TaskRecord.from_json(value) for value in await asyncio.to_thread(read_all)]

    async def put(self, record: TaskRecord) -> None:
        await asyncio.to_thread(
            internal_kv._internal_kv_put,
            self._prefix + record.task_id,
            record.to_json(),
            True,
            namespace=_NAMESPACE,
        )

    async def delete(self, task_id: str) -> None:
        await asyncio.to_thread(
            internal_kv._internal_kv_del, self._prefix + task_id, namespace=_NAMESPACE
        )


def delete_journal(bus: str) -> None:
    """Forget every task record of a bus (it was stopped). Blocking."""
    internal_kv._internal_kv_del(f"{bus}/", del_by_prefix=True, namespace=_NAMESPACE)
