"""The bus's task store as the gateway sees it: each call names the principal it is for.

:class:`~cluster.tasks.handle.TaskHandle` speaks for one principal; a gateway serves many,
so it asks the same store actor (the one ``BusClient.start_tool`` uses) with the
principal of each MCP request. Calls go through :func:`~cluster.tasks.handle.ask_store`,
so a store that Ray is restarting is asked again rather than reported missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.tasks.feed import FeedBatch, FeedCursor
from actors.tasks.inputs import InputOutcome
from actors.tasks.model import TaskRecord
from cluster.naming import HandleCache
from cluster.tasks.handle import ask_store
from cluster.tasks.settings import runs_tasks

if TYPE_CHECKING:
    from cluster.config import BusConfig
    from cluster.gateway.tasks import GatewayTasks

__all__ = ["RemoteTaskStore", "gateway_tasks_for"]


class RemoteTaskStore:
    """The store actor of ``bus`` (started on first use, as ``BusClient`` does)."""

    def __init__(self, bus: str) -> None:
        self._bus = bus
        self._handles = HandleCache()

    async def _store(self) -> Any:
        from cluster.ray_actors.task_store import task_store_for  # Ray buses only

        return await task_store_for(self._bus, self._handles)

    async def create(
        self,
        principal: str,
        tool: str,
        arguments: dict[str, Any],
        ttl_s: float | None,
        accepts_input: bool = False,
        call_params: dict[str, Any] | None = None,
    ) -> TaskRecord:
        store = await self._store()
        record: TaskRecord = await ask_store(
            store, "create", principal, tool, arguments, ttl_s, accepts_input, call_params
        )
        return record

    async def respond(self, task_id: str, principal: str, responses: object) -> InputOutcome:
        outcome: InputOutcome = await ask_store(
            await self._store(), "respond", task_id, principal, responses
        )
        return outcome

    async def fail_input(
        self, task_id: str, principal: str, key: str, error: object
    ) -> InputOutcome:
        outcome: InputOutcome = await ask_store(
            await self._store(), "fail_input", task_id, principal, key, error
        )
        return outcome

    async def get(self, task_id: str, principal: str) -> TaskRecord:
        record: TaskRecord = await ask_store(await self._store(), "get", task_id, principal)
        return record

    async def wait(
        self, task_id: str, principal: str, after_version: int, timeout_s: float
    ) -> TaskRecord:
        record: TaskRecord = await ask_store(
            await self._store(), "wait", task_id, principal, after_version, timeout_s
        )
        return record

    async def cancel(self, task_id: str, principal: str) -> TaskRecord:
        record: TaskRecord = await ask_store(await self._store(), "cancel", task_id, principal)
        return record

    async def list_tasks(self, principal: str) -> list[TaskRecord]:
        records: list[TaskRecord] = await ask_store(await self._store(), "list_tasks", principal)
        return records

    async def changes(self, cursor: FeedCursor | None, timeout_s: float) -> FeedBatch:
        batch: FeedBatch = await ask_store(await self._store(), "changes", cursor, timeout_s)
        return batch


def gateway_tasks_for(config: BusConfig) -> GatewayTasks:
    """The gateway's task support for ``config``'s bus, on every backend.

    A bus whose configuration names no task tool still gets it: a server may declare
    ``execution.taskSupport`` itself, and the gateway declares the ``tasks``
    capability only once some tool supports tasks.
    """
    from cluster.gateway.tasks import GatewayTasks  # the gateway's HTTP stack, lazily

    policy = config.gateway.policy
    return GatewayTasks(
        RemoteTaskStore(config.name),
        {pool.name: pool.tasks for pool in config.pools},
        authenticated=bool(policy.tokens) or policy.oauth is not None,
        configured=runs_tasks(config),
    )
