"""A task store for gateway tests that starts no Ray: the real store core, in memory.

It implements the gateway's ``TaskStorePort`` over :class:`TaskStoreCore` with a memory
journal; the calls the core submits are kept, and a test answers one as a worker would
(:meth:`FakeTaskStore.answer`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from actors.tasks.inputs import InputOutcome
from actors.tasks.journal import MemoryJournal
from actors.tasks.model import TaskRecord, parse_request_id
from actors.tasks.spec import TaskSettings, TaskSpec
from actors.tasks.store import TaskStoreCore
from transports.envelope import CorrelationKey
from transports.frame import Frame
from transports.message import Request, Response

__all__ = ["FakeTaskStore"]


@dataclass
class _RecordingPorts:
    address: str = "raybus/fake/tasks"
    submitted: list[Frame] = field(default_factory=list)
    cancelled: list[CorrelationKey] = field(default_factory=list)
    answers: list[tuple[str, Frame]] = field(default_factory=list)

    def submit(self, frames: list[Frame]) -> None:
        self.submitted.extend(frames)

    def cancel(self, keys: list[CorrelationKey]) -> None:
        self.cancelled.extend(keys)

    def answer(self, destination: str, frame: Frame) -> None:
        self.answers.append((destination, frame))


class FakeTaskStore:
    def __init__(self) -> None:
        self.ports = _RecordingPorts()
        self.core = TaskStoreCore(self.ports, MemoryJournal(), TaskSettings(), clock=time.time)
        self.created: list[TaskSpec] = []

    async def create(
        self,
        principal: str,
        tool: str,
        arguments: dict[str, Any],
        ttl_s: float | None,
        accepts_input: bool = False,
        call_params: dict[str, Any] | None = None,
    ) -> TaskRecord:
        spec = TaskSpec(
            principal=principal,
            tool=tool,
            arguments=arguments,
            ttl_s=ttl_s,
            accepts_input=accepts_input,
            call_params=call_params or {},
        )
        self.created.append(spec)
        return await self.core.create(spec)

    async def get(self, task_id: str, principal: str) -> TaskRecord:
        return self.core.require(task_id, principal, "tasks/get")

    async def wait(
        self, task_id: str, principal: str, after_version: int, timeout_s: float
    ) -> TaskRecord:
        return await self.core.wait(task_id, principal, after_version, timeout_s)

    async def cancel(self, task_id: str, principal: str) -> TaskRecord:
        return await self.core.cancel(task_id, principal)

    async def list_tasks(self, principal: str) -> list[TaskRecord]:
        return self.core.list_tasks(principal)

    async def respond(self, task_id: str, principal: str, responses: object) -> InputOutcome:
        return await self.core.respond(task_id, principal, responses)

    async def fail_input(
        self, task_id: str, principal: str, key: str, error: object
    ) -> InputOutcome:
        return await self.core.fail_input(task_id, principal, key, error)

    def _call(self, task_id: str) -> Frame:
        return next(
            f
            for f in reversed(self.ports.submitted)
            if (parsed := parse_request_id(f.envelope.request_id)) and parsed[0] == task_id
        )

    async def ask(self, task_id: str, request_id: str, method: str, params: dict[str, Any]) -> None:
        """The task's tool asks its caller for input, as its worker relays it."""
        envelope = replace(self._call(task_id).envelope, reply_to="raybus/fake/worker")
        request = Request(id=request_id, method=method, params=params)
        await self.core.on_frame(Frame.of(envelope, request))

    async def answer(
        self, task_id: str, *, result: Any = None, error: dict[str, Any] | None = None
    ) -> None:
        """Answer the task's submitted call, as its worker would."""
        call = self._call(task_id)
        request = call.decode()
        assert isinstance(request, Request)
        if error is not None:
            response = Response.failure(request.id, **error)
        else:
            response = Response.success(request.id, result)
        await self.core.on_frame(Frame.of(call.envelope, response))
