"""The task store as a Ray actor: :class:`~actors.tasks.store.TaskStoreCore` plus its ports.

One per bus, named ``raybus/<bus>/tasks``, detached, restarted by Ray when its process
dies (like the router). It is the caller of every task's ``tools/call``: it submits to
the router with ``reply_to`` = its own name, so workers and the router answer it by
name, whichever incarnation is alive. Records are journaled in the GCS key-value store
(:mod:`cluster.tasks.journals`); a restarted store reloads them before it serves
anything, and the calls the previous incarnation submitted answer this one.

What a caller may start as a task is decided here, from the pool that offers the tool
(discovery's catalogs) and the bus's configuration (:mod:`cluster.tasks.settings`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import replace
from typing import Any

import ray

from actors.outbox import BUSY_INTERVAL_S, Outbox
from actors.tasks.feed import FeedBatch, FeedCursor
from actors.tasks.inputs import InputOutcome
from actors.tasks.model import TaskRecord
from actors.tasks.spec import TaskSpec
from actors.tasks.store import TaskStoreCore
from cluster.config import BusConfig
from cluster.naming import HandleCache, actor_names
from cluster.ray_actors.restarts import CONTROL_ACTOR_OPTIONS, restarted, start_itself
from cluster.tasks.broker_ports import BrokerTaskStorePorts, answer_workers, unsent_of
from cluster.tasks.journals import GcsKvJournal
from cluster.tasks.settings import rerun_allowed, task_support
from transports.envelope import CorrelationKey
from transports.errors import (
    METHOD_NOT_FOUND,
    BusError,
    CallError,
    ConnectionClosed,
)
from transports.frame import Frame

__all__ = ["TaskStoreActor", "task_store_for"]

logger = logging.getLogger(__name__)

_SWEEP_S = 1.0
_INVALID_PARAMS = -32602


class _RayTaskStorePorts:
    def __init__(self, bus: str, handles: HandleCache) -> None:
        self._bus = bus
        self._handles = handles
        self.address = actor_names.tasks(bus)
        self._router = actor_names.router(bus)
        self.submissions: Outbox[str, Frame] = Outbox(
            self._submit, on_failure=self._submit_failed, min_interval_s=BUSY_INTERVAL_S
        )
        self.answers: Outbox[str, Frame] = Outbox(self._send_answers)
        self.core: TaskStoreCore | None = None
        # Request id -> the router incarnation that accepted the call (see check_router).
        self.held: dict[str, str] = {}
        self._incarnation: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, frames: list[Frame]) -> None:
        for frame in frames:
            self.submissions.put(self._router, frame)

    def _submit(self, router: str, frames: list[Frame]) -> Any:
        return self._accepted(frames, self._handles.get(router).submit.remote(frames))

    async def _accepted(self, frames: list[Frame], submitted: Any) -> None:
        incarnation = await submitted
        self.note_router(incarnation)
        for frame in frames:
            self.held[frame.envelope.request_id] = incarnation

    async def check_router(self) -> None:
        """Ask the router which incarnation it is, while it holds task calls: a restarted
        router lost those the dead one held (a router answers an empty batch at once)."""
        core = self.core
        if core is not None:
            for request_id in [r for r in self.held if not core.is_current(r)]:
                del self.held[request_id]
        if self.held:
            self.note_router(await self._handles.get(self._router).submit.remote([]))

    def note_router(self, incarnation: object) -> None:
        if not isinstance(incarnation, str):
            return
        if self._incarnation is not None and incarnation != self._incarnation:
            lost = [r for r, held_by in self.held.items() if held_by != incarnation]
            for request_id in lost:
                del self.held[request_id]
            if lost and self.core is not None:
                logger.warning("the bus router restarted holding %d task call(s)", len(lost))
                message = "the bus router restarted while it held the call: it may have run"
                self._spawn(self.core.calls_lost(lost, message))
        self._incarnation = incarnation

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._tasks.discard)

    def _submit_failed(self, router: str, frames: list[Frame], exc: BaseException) -> None:
        # The router is restarting: Ray queues calls to a restarting actor, so this is a
        # router that is gone for good (the bus is stopping). Fail the calls' tasks.
        logger.warning("could not submit %d task call(s): %s", len(frames), exc)
        self._handles.forget(router)
        core = self.core
        if core is None:
            return
        for frame in unsent_of(frames, exc):  # the batch's others went: they stay pending
            refusal = {"code": 1006, "message": f"the bus router is unreachable: {exc}"}
            self._spawn(core.fail_call(frame, refusal))

    def cancel(self, keys: list[CorrelationKey]) -> None:
        # Sent directly: a cancellation must not wait behind a batch of new calls.
        self._handles.get(self._router).cancel.remote(keys)

    def answer(self, destination: str, frame: Frame) -> None:
        self.answers.put(destination, frame)

    def _send_answers(self, destination: str, frames: list[Frame]) -> Any:
        return answer_workers(self._handles, destination, frames)


@ray.remote
class TaskStoreActor:
    def __init__(self, config: BusConfig) -> None:
        self._config = config
        self._bus = config.name
        self._handles = HandleCache()
        self._ports: _RayTaskStorePorts | BrokerTaskStorePorts
        if config.backend == "ray":
            self._ports = _RayTaskStorePorts(self._bus, self._handles)
        else:  # no router sees broker calls: the store is a broker client itself
            self._ports = BrokerTaskStorePorts(config, self._handles)
        self._core = TaskStoreCore(
            self._ports, GcsKvJournal(self._bus), config.tasks.settings(), clock=time.time
        )
        self._ports.core = self._core
        self._started: asyncio.Task[None] | None = None
        self._loaded = 0
        self._sweeper: asyncio.Task[None] | None = None
        if restarted():  # reload the journal at once, not only on the next call
            start_itself("start", lambda: self._started is not None)

    async def start(self) -> None:
        """Load the journal and start the sweeper; every call waits for it first.

        A store Ray restarted must know its tasks before it answers about them (else a
        ``get`` would say "not found" for a task that exists).
        """
        task = self._started
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._started = asyncio.get_running_loop().create_task(self._load())
        await asyncio.shield(task)

    async def _load(self) -> None:
        if isinstance(self._ports, BrokerTaskStorePorts):
            await self._ports.open()  # reloaded tasks may be submitted again at once
        self._loaded = await self._core.load()
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)  # the sweeper's period, not synchronisation
            try:
                await self._core.tick()
                await self._ports.check_router()
            except Exception:  # the sweeper must survive one bad turn
                logger.exception("task sweep failed")

    # -- the store's API (BusClient.start_tool, TaskHandle) ----------------------------

    async def create(
        self,
        principal: str,
        tool: str,
        arguments: dict[str, Any],
        ttl_s: float | None = None,
        accepts_input: bool = False,
        call_params: dict[str, Any] | None = None,
    ) -> TaskRecord:
        """Start ``tool`` as a task for ``principal``; returns the journaled record.
        ``accepts_input``: the caller answers the tool's input requests (``respond``);
        ``call_params``: more params of the call (``TaskRecord.call_params``).

        Raises:
            CallError: -32602 no pool offers the tool; -32601 the tool does not run as
                a task; 1002 too many open tasks.
        """
        await self.start()
        spec = await self._spec(principal, tool, arguments, ttl_s)
        spec = replace(spec, accepts_input=accepts_input, call_params=call_params or {})
        return await self._core.create(spec)

    async def _spec(
        self, principal: str, tool: str, arguments: dict[str, Any], ttl_s: float | None
    ) -> TaskSpec:
        discovery = await self._handles.get_async(actor_names.discovery(self._bus))
        catalogs = await discovery.catalogs.remote()
        for pool_name, catalog in sorted(catalogs.items()):
            found = next((t for t in catalog.tools if t.get("name") == tool), None)
            if found is None:
                continue
            pool = self._config.pool(pool_name)
            if task_support(pool.tasks, found) == "forbidden":
                raise CallError(
                    "tools/call",
                    METHOD_NOT_FOUND,
                    f"tool {tool!r} does not run as a task: list it under tasks.tools of "
                    f"pool {pool_name!r} (or let its server declare execution.taskSupport)",
                )
            rerun = rerun_allowed(pool.tasks, found)
            return TaskSpec(
                principal=principal,
                tool=tool,
                arguments=arguments,
                run_timeout_s=pool.tasks.run_timeout_s if pool.tasks else pool.timeout_s,
                ttl_s=ttl_s,
                max_attempts=pool.tasks.max_attempts if pool.tasks and rerun else 1,
                rerun_lost=rerun,
            )
        raise CallError("tools/call", _INVALID_PARAMS, f"unknown tool: {tool!r}")

    async def get(self, task_id: str, principal: str) -> TaskRecord:
        """Raises: CallError -32602 for an unknown, expired or foreign task."""
        await self.start()
        return self._core.require(task_id, principal, "tasks/get")

    async def wait(
        self, task_id: str, principal: str, after_version: int, timeout_s: float
    ) -> TaskRecord:
        """The task once it changed past ``after_version`` (or as it is at the timeout)."""
        await self.start()
        return await self._core.wait(task_id, principal, after_version, timeout_s)

    async def cancel(self, task_id: str, principal: str) -> TaskRecord:
        await self.start()
        return await self._core.cancel(task_id, principal)

    async def respond(self, task_id: str, principal: str, responses: object) -> InputOutcome:
        """Answers to the task's input requests (``tasks/update``).

        Raises:
            CallError: -32602 for an unknown, expired or foreign task, or an answer that
                is not an object.
        """
        await self.start()
        return await self._core.respond(task_id, principal, responses)

    async def fail_input(
        self, task_id: str, principal: str, key: str, error: object
    ) -> InputOutcome:
        """A JSON-RPC error answering the input request ``key`` (a 2025-11-25 client's).

        Raises:
            CallError: -32602 for an unknown, expired or foreign task, or a malformed error.
        """
        await self.start()
        return await self._core.fail_input(task_id, principal, key, error)

    async def list_tasks(self, principal: str) -> list[TaskRecord]:
        await self.start()
        return self._core.list_tasks(principal)

    async def changes(self, cursor: FeedCursor | None, timeout_s: float) -> FeedBatch:
        """Status changes after ``cursor`` (a gateway's long poll, see actors.tasks.feed)."""
        await self.start()
        return await self._core.feed.changes(cursor, timeout_s)

    async def stats(self) -> dict[str, Any]:
        """Tasks by status, and this incarnation's process and how many it reloaded."""
        await self.start()
        return {"pid": os.getpid(), "loaded": self._loaded, "tasks": self._core.counts()}

    # -- the bus's answers -------------------------------------------------------------

    async def deliver(self, frames: list[Frame]) -> None:
        """Answers, progress and server requests of task calls (router and workers)."""
        await self.start()
        for frame in frames:
            try:
                await self._core.on_frame(frame)
            except BusError as exc:
                logger.warning("dropped an undecodable frame: %s", exc)

    async def ping(self) -> str:
        return "pong"


async def task_store_for(bus: str, handles: HandleCache) -> Any:
    """The bus's task store; started on first use if the bus started without one.

    A bus starts a store only when its configuration lets a pool run tools as tasks
    (:func:`cluster.tasks.settings.runs_tasks`); a server may still declare
    ``execution.taskSupport`` itself, and its first task starts the store here.

    Raises:
        ConnectionClosed: no bus of that name is running.
    """
    name = actor_names.tasks(bus)
    try:
        return await handles.get_async(name)
    except ConnectionClosed:
        pass
    supervisor = await handles.get_async(actor_names.supervisor(bus))
    config = await supervisor.config.remote()
    # Two clients may race here: the name is claimed once and both get that actor.
    handle = TaskStoreActor.options(  # type: ignore[attr-defined]
        name=name, get_if_exists=True, **CONTROL_ACTOR_OPTIONS
    ).remote(config)
    handles.put(name, handle)
    return handle
