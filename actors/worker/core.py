"""The worker: hosts one MCP server and serves many calls on it at once.

Pure asyncio logic; the Ray actor in ``cluster`` wraps it. Calls arrive in numbered
batches from the router; each runs as its own task, and its response goes to the
caller's endpoint while a :class:`~actors.router.core.Completion` goes back to the router. All
outbound traffic is coalesced per destination (see :mod:`actors.outbox`).

Draining takes no new work, finishes what it holds, then closes the server. The router
counts the calls it sent, so a drain waits until every call the router sent before
retiring this worker has arrived: a batch still in transit is served, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from actors.discovery.registry import Heartbeat, ServerStatus
from actors.replies import error_reply
from actors.router.core import Completion
from actors.worker.admission import ADMIT_ALL, Admission
from actors.worker.hosted_server import HostedServer
from actors.worker.keyed import KeyedRuns
from transports.envelope import CorrelationKey
from transports.errors import (
    INTERNAL_ERROR,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    BusError,
    BusErrorCode,
)
from transports.frame import Frame
from transports.message import Request, Response

__all__ = ["WorkerCore", "WorkerIdentity", "WorkerPorts", "completion_of"]

logger = logging.getLogger(__name__)

# Outcomes that say the pool is unhealthy (not that a tool reported an error).
_POOL_FAULTS = frozenset(
    {
        INTERNAL_ERROR,
        BusErrorCode.UPSTREAM_FAILED,
        BusErrorCode.SHUTTING_DOWN,
    }
)
# Outcomes that are the caller's (or the pool's deadline's) doing, not the server's: a
# tool that runs past its deadline is slow by design or by input, and fifty callers
# giving up on a never-ending tool must not open the breaker for a healthy pool.
_ABANDONED = frozenset({BusErrorCode.DEADLINE_EXCEEDED, BusErrorCode.CANCELLED})


def completion_of(key: CorrelationKey, response: Response | None, duration_s: float) -> Completion:
    """How a server's answer ends its call (``None``: the call was cancelled).

    One place decides what is a pool fault, an abandoned call or a tool error, for the
    router's breaker and metrics (Ray) and for a broker worker's own metrics alike.
    """
    if response is None:  # cancelled: the client already has its outcome
        return Completion(key, False, duration_s, abandoned=True, error_code=BusErrorCode.CANCELLED)
    code = response.error.code if response.error is not None else None
    result = response.result
    return Completion(
        key,
        code in _POOL_FAULTS,
        duration_s,
        abandoned=code in _ABANDONED,
        error_code=code,
        tool_error=isinstance(result, dict) and result.get("isError") is True,
    )


class WorkerPorts(Protocol):
    def reply(self, destination: str, frame: Frame, completion: Completion | None = None) -> None:
        """Send ``frame`` to ``destination``; with ``completion`` (the frame answers a
        call), report it only once the frame has left: see :meth:`_finish`."""

    def completed(self, completion: Completion) -> None: ...


@dataclass(frozen=True)
class WorkerIdentity:
    server_id: str
    pool: str
    actor_name: str
    capacity: int
    node_id: str = ""


def _past_max_sync(frame: Frame, response: Response | None, max_sync_s: float) -> Response | None:
    """A synchronous call ended by ``max_sync_s``: say how to run it instead (as a task)."""
    if response is None or response.error is None:
        return response
    if response.error.code != BusErrorCode.DEADLINE_EXCEEDED:
        return response
    message = (
        f"tool {frame.envelope.name!r} ran past its pool's max_sync_s ({max_sync_s:g} s) as a "
        "synchronous call; run it as a task: BusClient.start_tool() (the pool's "
        "tasks.tools must list it)"
    )
    data = {"maxSyncSeconds": max_sync_s}
    return Response.failure(response.id, BusErrorCode.DEADLINE_EXCEEDED, message, data)


def _runs_only_as_task(frame: Frame) -> Response:
    message = (
        f"tool {frame.envelope.name!r} runs only as a task: use BusClient.start_tool() "
        "(or an MCP client that declares the io.modelcontextprotocol/tasks extension)"
    )
    tasks: dict[str, object] = {"io.modelcontextprotocol/tasks": {}}
    data = {"requiredCapabilities": {"extensions": tasks}}
    request = frame.decode()
    request_id = request.id if isinstance(request, Request) else None
    return Response.failure(request_id, MISSING_REQUIRED_CLIENT_CAPABILITY, message, data)


class WorkerCore:
    def __init__(
        self,
        identity: WorkerIdentity,
        hosted: HostedServer,
        ports: WorkerPorts,
        *,
        call_timeout_s: float = 300.0,
        max_sync_s: float | None = None,
        task_timeout_s: float | None = None,
        task_only: Callable[[str], bool] | None = None,
        admission: Admission = ADMIT_ALL,
        keyed: KeyedRuns | None = None,
        on_waiting: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.identity = identity
        self.hosted = hosted
        self._ports = ports
        self._call_timeout_s = call_timeout_s
        # A task's call (envelope attribute "task") is bounded by the task's run timeout;
        # a synchronous one by max_sync_s as well as the pool's timeout.
        self._sync_timeout_s = min(call_timeout_s, max_sync_s or call_timeout_s)
        self._task_timeout_s = task_timeout_s or call_timeout_s
        # Tools that run only as tasks (their pool's tasks.tools says "required"): a
        # synchronous call of one is refused before it runs.
        self._task_only = task_only
        self._admission = admission
        # Calls with an idempotency key go through the bus's ledger (actors.worker.keyed);
        # None: served like any other (a worker whose calls come from a broker source).
        self._keyed = keyed
        self._clock = clock
        self._tasks: dict[CorrelationKey, asyncio.Task[None]] = {}
        # Routed calls that found every slot taken, in arrival order. The router never
        # sends more than a worker's capacity, but clients' direct calls (Ray) fill slots
        # the router has not heard of yet: the worker alone knows its slots, so it runs
        # at most ``capacity`` calls and holds the rest. ``on_waiting`` hears their count
        # (the router counts them as queued, not running).
        self._waiting: dict[CorrelationKey, Frame] = {}
        # Started calls cancelled before they reached the server (their task had not run
        # yet, or waited on the ledger): the server must never get them.
        self._cancelled_unsent: set[CorrelationKey] = set()
        self._on_waiting = on_waiting
        self._frames_received = 0
        self._frames_arrived = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False
        self.served = 0
        self._reported_digest = ""

    async def start(self) -> None:
        await self.hosted.start()

    # -- inbound ---------------------------------------------------------------------

    def deliver(self, frames: list[Frame], *, routed: bool = True) -> None:
        """Start serving a batch of calls (``routed``: sent by the router, which counts
        them for the drain; else sent directly by a client, see actors.worker.direct)."""
        if routed:
            self._frames_received += len(frames)
            self._frames_arrived.set()
        for frame in frames:
            key = frame.envelope.correlation_key
            refusal = self._admission.refuse(frame.envelope)
            if refusal is not None:  # never seen by the server (README "Regions")
                reply = error_reply(frame, refusal.code, refusal.message, refusal.data())
                self._finish(frame, reply, Completion(key, False, 0.0, error_code=refusal.code))
                continue
            if key in self._tasks or key in self._waiting:
                duplicate = error_reply(frame, BusErrorCode.OUTCOME_UNKNOWN, "duplicate delivery")
                completion = Completion(key, False, 0.0, error_code=BusErrorCode.OUTCOME_UNKNOWN)
                self._finish(frame, duplicate, completion)
                continue
            if routed and (self._waiting or len(self._tasks) >= self.identity.capacity):
                self._waiting[key] = frame
                self._waiting_changed()
                continue
            self._start(key, frame)

    def _start(self, key: CorrelationKey, frame: Frame) -> None:
        self._idle.clear()
        self._tasks[key] = asyncio.get_running_loop().create_task(self._serve(frame))

    def _start_waiting(self) -> None:
        started = False
        while self._waiting and len(self._tasks) < self.identity.capacity:
            key = next(iter(self._waiting))
            self._start(key, self._waiting.pop(key))
            started = True
        if started:
            self._waiting_changed()

    def _waiting_changed(self) -> None:
        if self._on_waiting is not None:
            self._on_waiting(len(self._waiting))

    async def cancel(self, keys: list[CorrelationKey]) -> None:
        for key in keys:
            if self._waiting.pop(key, None) is not None:  # never started: nothing to stop
                self._waiting_changed()
                self._ports.completed(completion_of(key, None, 0.0))
            elif not await self.hosted.cancel(key) and key in self._tasks:
                self._cancelled_unsent.add(key)

    async def answer(self, frames: list[Frame]) -> None:
        """Clients' responses to requests the server sent them (sampling, elicitation, ...)."""
        for frame in frames:
            try:
                await self.hosted.answer(frame)
            except BusError as exc:
                logger.warning("dropped an undecodable answer from a client: %s", exc)

    async def drain(self, frames_sent: int, timeout_s: float) -> bool:
        """Finish all work the router sent (``frames_sent`` calls), then stop the server.

        Returns whether everything finished within ``timeout_s``.
        """
        self.draining = True
        finished = True
        try:
            async with asyncio.timeout(timeout_s):
                while self._frames_received < frames_sent:
                    self._frames_arrived.clear()
                    await self._frames_arrived.wait()
                while self._tasks:
                    await self._idle.wait()
        except TimeoutError:
            finished = False
            logger.warning(
                "drain of %s timed out with %d call(s) running",
                self.identity.actor_name,
                len(self._tasks),
            )
        await self.hosted.close()
        return finished

    # -- state -----------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Calls this worker holds: running, or waiting for a slot."""
        return len(self._tasks) + len(self._waiting)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def status(self) -> ServerStatus:
        if self.draining:
            return ServerStatus.DRAINING
        return (
            ServerStatus.BUSY if self.in_flight >= self.identity.capacity else ServerStatus.ONLINE
        )

    def heartbeat(self, *, with_catalog: bool, list_changed: tuple[str, ...] = ()) -> Heartbeat:
        catalog = self.hosted.catalog
        return Heartbeat(
            server_id=self.identity.server_id,
            pool=self.identity.pool,
            actor_name=self.identity.actor_name,
            status=self.status(),
            in_flight=self.in_flight,
            catalog_digest=catalog.digest,
            capacity=self.identity.capacity,
            catalog=catalog if with_catalog else None,
            node_id=self.identity.node_id,
            list_changed=list_changed,
        )

    # -- internals -------------------------------------------------------------------

    async def _serve(self, frame: Frame) -> None:
        started = self._clock()
        key = frame.envelope.correlation_key
        try:
            remaining = frame.envelope.remaining_s()
            is_task = any(name == "task" for name, _ in frame.envelope.attributes)
            if not is_task and self._refused_as_sync(frame):
                refusal = _runs_only_as_task(frame)
                self._finish(
                    frame, Frame.of(frame.envelope, refusal), completion_of(key, refusal, 0.0)
                )
                return
            bound = self._task_timeout_s if is_task else self._sync_timeout_s
            # The pool's deadline bounds every call; a caller's own can only shorten it.
            timeout = bound if remaining is None else max(0.0, min(remaining, bound))

            async def call() -> Response | None:
                if key in self._cancelled_unsent:
                    return None  # cancelled on its way: as if the server had been told
                answer = await self.hosted.call(frame, timeout)
                if not is_task and bound < self._call_timeout_s and timeout == bound:
                    answer = _past_max_sync(frame, answer, bound)
                return answer

            if self._keyed is not None and frame.envelope.idempotency_key is not None:
                response = (await self._keyed.run(frame, call)).response
            else:
                response = await call()
            completion = completion_of(key, response, self._clock() - started)
            if response is None:
                self._ports.completed(completion)
                return
            self._finish(frame, Frame.of(frame.envelope, response), completion)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # top of the call task: answer, never crash
            logger.exception("call %s failed inside the worker", frame.envelope.request_id)
            reply = error_reply(frame, INTERNAL_ERROR, f"worker error: {exc}")
            failure = Completion(key, True, self._clock() - started, error_code=INTERNAL_ERROR)
            self._finish(frame, reply, failure)
        finally:
            self._tasks.pop(key, None)
            self._cancelled_unsent.discard(key)
            self.served += 1
            self._start_waiting()
            if not self._tasks:
                self._idle.set()

    def _refused_as_sync(self, frame: Frame) -> bool:
        envelope = frame.envelope
        return (
            self._task_only is not None
            and envelope.method == "tools/call"
            and self._task_only(envelope.name or "")
        )

    def _finish(self, request: Frame, reply: Frame, completion: Completion) -> None:
        # The completion travels with the answer: a router told the call ended before its
        # answer left would have nothing to re-run or fail if this worker died meanwhile.
        if request.envelope.reply_to is not None:
            self._ports.reply(request.envelope.reply_to, reply, completion)
        else:
            self._ports.completed(completion)
