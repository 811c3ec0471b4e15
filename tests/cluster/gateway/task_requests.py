"""The 2025-11-25 task requests, sent by the official SDK client (``mcp.Client``).

SDK 2.3.0's client has the era's task types but no task flow: it checks a ``tools/call``
result as a ``CallToolResult``, so :func:`create_task` sends the task-augmented call
through the session's dispatcher and validates the answer as the spec's
``CreateTaskResult`` itself. The ``tasks/*`` methods go through ``send_request``.
"""

from __future__ import annotations

from typing import Any

import mcp
import mcp_types as types

__all__ = ["create_task", "task_cancel", "task_get", "task_list", "task_result"]

# tasks/result blocks until the task ends; bounded for a cold, loaded 2-core machine.
_RESULT_WAIT_S = 120.0


async def create_task(
    client: mcp.Client, name: str, arguments: dict[str, Any], ttl_ms: int | None = None
) -> types.CreateTaskResult:
    params = types.CallToolRequestParams(
        name=name, arguments=arguments, task=types.TaskMetadata(ttl=ttl_ms)
    ).model_dump(by_alias=True, mode="json", exclude_none=True)
    raw = await client.session._dispatcher.send_raw_request("tools/call", params)
    return types.CreateTaskResult.model_validate(raw, by_name=False)


async def task_get(client: mcp.Client, task_id: str) -> types.GetTaskResult:
    request = types.GetTaskRequest(params=types.GetTaskRequestParams(task_id=task_id))
    return await client.session.send_request(request, types.GetTaskResult)


async def task_result(client: mcp.Client, task_id: str) -> types.CallToolResult:
    request = types.GetTaskPayloadRequest(params=types.GetTaskPayloadRequestParams(task_id=task_id))
    return await client.session.send_request(
        request, types.CallToolResult, request_read_timeout_seconds=_RESULT_WAIT_S
    )


async def task_cancel(client: mcp.Client, task_id: str) -> types.CancelTaskResult:
    request = types.CancelTaskRequest(params=types.CancelTaskRequestParams(task_id=task_id))
    return await client.session.send_request(request, types.CancelTaskResult)


async def task_list(client: mcp.Client, cursor: str | None = None) -> types.ListTasksResult:
    params = types.PaginatedRequestParams(cursor=cursor) if cursor is not None else None
    request = types.ListTasksRequest(params=params)
    return await client.session.send_request(request, types.ListTasksResult)
