"""The worker as a Ray actor: one hosted MCP server, heartbeats, batched replies.

Starting is two steps, so a pool can keep warm spares (see the supervisor):
:meth:`WorkerActor.prepare` starts the server and finishes its handshake - the slow
part, dominated by the process's imports - and :meth:`WorkerActor.activate` joins the
backend and sends the first heartbeat at once, after which discovery hands the worker
to the router (tens of milliseconds). :meth:`WorkerActor.start` does both.

With a broker backend no router sees the calls a worker takes from its pool's topic or
queue, so the worker counts them itself (``raybus_requests_total``, the latency
histogram): its source's tally goes into its own registry, which is exported to Ray
every second and handed to ``raybus up --metrics-port`` (``metrics_snapshot``). On Ray
the router counts every call and a worker records nothing, so no call counts twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import ray

from actors.router.core import Completion
from actors.thread_root import pin_thread_pool_root
from actors.worker.admission import admission_for
from actors.worker.direct import DirectOutcome
from cluster.backends.base import WorkerLink, WorkerSource, backend_for
from cluster.config import BusConfig, PoolConfig
from cluster.idempotency import keyed_runs_for
from cluster.metrics.ray_export import RayExport, export_forever
from cluster.metrics.recorders import CallRecorder
from cluster.metrics.registry import FamilySnapshot, MetricsRegistry
from cluster.namespaces import pool_exposure
from cluster.naming import HandleCache
from cluster.ray_actors.direct_listener import DirectListener
from cluster.ray_actors.worker_ports import RayWorkerPorts
from cluster.tasks.settings import task_support
from cluster.telemetry import install_tracing
from transports.envelope import CorrelationKey
from transports.errors import BusError
from transports.frame import Frame

if TYPE_CHECKING:
    from actors.worker.server_links import ServerLink

# The hosted-server side (actors.worker.core, hosted_server) is imported where a worker
# is built, not here: the supervisor imports this module only to create workers. The MCP
# SDK (a third of a second of CPU) comes in only with a pool's SDK server object or remote
# link (link_factory_for): a worker hosting a command never loads it.

__all__ = [
    "PoolStartFailed",
    "WorkerActor",
    "link_factory_for",
    "load_pool_server",
    "start_failure_reason",
]

_CATALOG_EVERY_N_BEATS = 5
# A drained worker that took direct calls announces it at once and stays this long
# (bouncing them) so clients, which re-read membership every second, see it first: a
# direct call to a worker already gone looks like one lost while it ran (1004).
_DIRECT_LINGER_S = 1.5
_REMOTE_CONNECT_TIMEOUT_S = 10.0

logger = logging.getLogger(__name__)


class PoolStartFailed(BusError):
    """A pool's worker could not start; ``reason`` is one line a user can act on."""

    def __init__(self, pool: str, reason: str) -> None:
        super().__init__(pool, reason)
        self.pool = pool
        self.reason = reason

    def __str__(self) -> str:
        return f"pool {self.pool!r} failed to start: {self.reason}"


def start_failure_reason(exc: BaseException) -> str:
    """One line saying why a server did not start (no traceback, no Ray wrapping)."""
    cause = getattr(exc, "cause", None)  # a RayTaskError carries the remote exception
    if isinstance(cause, BaseException) and cause is not exc:
        return start_failure_reason(cause)
    if isinstance(exc, PoolStartFailed):
        return exc.reason
    if isinstance(exc, TimeoutError):
        return "the server did not finish the MCP handshake in time"
    if isinstance(exc, BusError | ImportError | OSError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# A pool command's program that means "this worker's own Python", which has raybus and
# its environment; found on PATH instead, it may be another Python without the server's
# packages (a venv's `raybus` run without the venv on PATH).
_OWN_PYTHON = frozenset({"python", "python3"})


def server_command(command: list[str]) -> list[str]:
    """A pool's ``command`` as a worker runs it: a bare ``python`` is its own interpreter."""
    if command and command[0] in _OWN_PYTHON:
        return [sys.executable, *command[1:]]
    return list(command)


def link_factory_for(pool: PoolConfig) -> Any:
    """A factory of fresh links to the pool's server (called again on every restart).

    The server object is imported on the first call, inside the worker's ``start``, so a
    bad import path fails that call with its reason instead of killing the actor's
    constructor (whose error Ray reports only as a dead actor).
    """
    if pool.command is not None:
        # No MCP SDK in this process: the command speaks MCP on our own codec.
        from actors.worker.server_links import StdioServerLink

        command = server_command(list(pool.command))
        env = {**os.environ, **pool.env} if pool.env else None
        return lambda: StdioServerLink(command, env=env)
    if pool.url is not None:
        return _remote_link_factory(pool, pool.url)
    from actors.worker.sdk_link import SdkServerLink
    from actors.worker.tool_threads import take_over_sync_tools

    loaded: list[Any] = []

    def make() -> ServerLink:
        if not loaded:
            server = load_pool_server(pool)
            # This process's copy of the server: its sync tools hop to a thread cheaper.
            take_over_sync_tools(server)
            loaded.append(server)
        return SdkServerLink(loaded[0])

    return make


def load_pool_server(pool: PoolConfig) -> Any:
    """Import the SDK server object of a ``server:`` or ``tools:`` pool (as workers do).

    Raises:
        ValueError, ImportError: whatever loading it raised (see ``load_server_object``).
    """
    from actors.worker.sdk_link import functions_server, load_server_object

    return load_server_object(pool.server) if pool.server else functions_server(pool.tools or "")


def _remote_link_factory(pool: PoolConfig, url: str) -> Any:
    from actors.worker.remote_link import RemoteServerLink
    from cluster.upstream import shown_url

    headers = {name: value.get_secret_value() for name, value in pool.headers.items()}
    label = shown_url(url)
    # Connecting and acknowledgements are bounded by the call deadline, at most 10 s.
    connect_timeout_s = min(_REMOTE_CONNECT_TIMEOUT_S, pool.timeout_s)
    return lambda: RemoteServerLink(
        url,
        headers,
        label=label,
        max_connections=pool.max_concurrency,
        connect_timeout_s=connect_timeout_s,
    )


@ray.remote
class WorkerActor:
    def __init__(self, config: BusConfig, pool: PoolConfig, actor_name: str) -> None:
        from actors.worker.core import WorkerCore, WorkerIdentity
        from actors.worker.hosted_server import HostedServer

        bus = config.name
        self._bus = bus
        self._config = config
        self._pool = pool
        if pool.command is None and pool.url is None:
            # An in-process server reads this process's environment; the process hosts
            # nothing else. A command gets the env as its own (link_factory_for).
            os.environ.update(pool.env)
        self._heartbeat_interval_s = config.discovery.heartbeat_interval_s
        # Picked here, imported lazily: a Ray bus's workers never load broker clients.
        self._backend = backend_for(config)
        self._link: WorkerLink | None = None
        self._source: WorkerSource | None = None
        self._beats_sent = 0
        self._handles = HandleCache()
        self._ports = RayWorkerPorts(
            bus,
            actor_name,
            self._handles,
            pool=pool.name,
            capacity=pool.max_concurrency,
            slow_call_s=config.router.breaker.slow_call_threshold_s,  # a verdict: sent at once
        )
        node_id = ray.get_runtime_context().get_node_id()
        identity = WorkerIdentity(
            server_id=actor_name.rsplit("/", 1)[-1],
            pool=pool.name,
            actor_name=actor_name,
            capacity=pool.max_concurrency,
            node_id=node_id,
        )
        self._catalog_dirty = asyncio.Event()
        self._list_changed: set[str] = set()
        hosted = HostedServer(
            link_factory_for(pool),
            # A command or a remote server gets 2026-07-28 calls over its one session.
            modern_link_factory=None if pool.command or pool.url else link_factory_for(pool),
            sink=self._ports.reply,
            address=actor_name,
            on_catalog_changed=self._catalog_dirty.set,
            on_list_changed=self._note_list_changed,
            exposure=pool_exposure(config, pool),
        )
        self._core = WorkerCore(
            identity,
            hosted,
            self._ports,
            call_timeout_s=pool.timeout_s,
            max_sync_s=pool.max_sync_s,
            task_timeout_s=pool.tasks.run_timeout_s if pool.tasks is not None else None,
            task_only=lambda name: self._task_only(name),
            admission=admission_for(config.router.regions, pool.name),
            keyed=keyed_runs_for(config, self._handles, longest_run_s=_longest_run_s(pool)),
            on_waiting=self._ports.waiting_changed,
        )
        self._beats: asyncio.Task[None] | None = None
        # Made when the worker goes live with a source (broker backends): see the module.
        self._metrics: MetricsRegistry | None = None
        self._calls: CallRecorder | None = None
        self._export: RayExport | None = None
        self._exporter: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._starting = asyncio.Lock()
        self._prepared = False
        self._active = False
        self._thread_root: asyncio.Task[None] | None = None  # see actors.thread_root
        # Direct calls from clients on this node skip Ray's per-call cost: see the module.
        self._direct_listener = DirectListener(self._direct_call, self._ports.direct.collect)
        self._direct_path: str | None = None

    async def start(self) -> dict[str, Any]:
        """Start the server and go live (:meth:`prepare`, then :meth:`activate`).

        Raises:
            PoolStartFailed: the server (or the broker source) did not start; the
                reason is one line (e.g. ``No module named 'x'``), never a traceback.
        """
        await self.prepare()
        return await self.activate()

    async def prepare(self) -> dict[str, Any]:
        """Start the server and finish its handshake, but take no calls yet (a spare).

        Idempotent. Nothing routes to a prepared worker until :meth:`activate`.

        Raises:
            PoolStartFailed: the server did not start (the reason in one line).
        """
        async with self._starting:
            if not self._prepared:
                await self._failing_as_pool_start(self._start_server())
                self._prepared = True
        return self._who()

    async def activate(self) -> dict[str, Any]:
        """Go live: join the backend and register with discovery, which routes calls here.

        Idempotent; prepares first if that was not done.

        Raises:
            PoolStartFailed: the server or the broker source did not start.
        """
        await self.prepare()
        async with self._starting:
            if not self._active:
                await self._failing_as_pool_start(self._go_live())
                self._active = True
        return self._who()

    async def is_active(self) -> bool:
        """Has this worker gone live (False: a spare, or still starting)?"""
        return self._active

    async def _start_server(self) -> None:
        install_tracing("worker")  # before the server: its own spans record too
        # Sync tools reuse anyio's threads instead of starting one per call (see module).
        self._thread_root = await pin_thread_pool_root()
        await self._core.start()
        self._direct_path = await self._direct_listener.start()

    async def _failing_as_pool_start(self, step: Coroutine[Any, Any, None]) -> None:
        try:
            await step
        except Exception as exc:
            logger.exception("worker of pool %s failed to start", self._pool.name)
            raise PoolStartFailed(self._pool.name, start_failure_reason(exc)) from None

    async def _go_live(self) -> None:
        identity = self._core.identity
        link = await self._backend.open_worker(
            self._pool,
            self._core.hosted,
            server_id=identity.server_id,
            capacity=identity.capacity,
            handles=self._handles,
        )
        self._link, self._source = link, link.source
        if self._source is not None:
            self._ports.topic_sink = self._source.emit
            self._count_calls_here()
            await self._source.start()
        # The first beat goes out now, not after a heartbeat period: discovery passes it
        # to the router at once, and the router routes to this worker from then on.
        await self._beat(with_catalog=True)
        self._beats = asyncio.get_running_loop().create_task(self._beat_forever())

    def _count_calls_here(self) -> None:
        self._metrics = MetricsRegistry(self._bus)
        self._calls = CallRecorder(self._metrics)
        self._export = RayExport(self._metrics)
        self._exporter = asyncio.get_running_loop().create_task(
            export_forever(self._export, refresh=self._take_calls)
        )

    def _take_calls(self) -> None:
        if self._source is not None and self._calls is not None:
            self._calls.calls_ended(self._source.calls_ended())

    async def metrics_snapshot(self) -> list[FamilySnapshot] | None:
        """The calls this worker ended, by outcome, and their latencies (for ``raybus up
        --metrics-port``); None where the router counts them (Ray backend)."""
        if self._metrics is None:
            return None
        self._take_calls()
        return self._metrics.snapshot()

    def _who(self) -> dict[str, Any]:
        identity = self._core.identity
        return {"server_id": identity.server_id, "node_id": identity.node_id, "pid": _pid()}

    def _note_list_changed(self, kind: str) -> None:
        self._list_changed.add(kind)
        self._catalog_dirty.set()  # announce it with the next heartbeat, now

    async def _beat(self, *, with_catalog: bool) -> bool:
        if self._link is None:
            raise RuntimeError("the worker has not started")
        heartbeats = self._link.heartbeats
        changed, self._list_changed = tuple(sorted(self._list_changed)), set()
        self._beats_sent += 1
        # Where discovery cannot ask for the catalog, send it when it changed and every
        # few beats, so a restarted discovery learns it soon.
        periodic = not heartbeats.answers and self._beats_sent % _CATALOG_EVERY_N_BEATS == 1
        beat = self._core.heartbeat(with_catalog=with_catalog or periodic, list_changed=changed)
        if self._source is not None:  # calls taken from the queue count as load too
            beat = replace(beat, in_flight=beat.in_flight + self._source.in_flight)
        try:
            return await heartbeats.send(beat)
        except Exception:
            self._list_changed.update(changed)  # not delivered: announce it next time
            raise

    async def _beat_forever(self) -> None:
        with_catalog = False
        while True:
            try:
                async with asyncio.timeout(self._heartbeat_interval_s):
                    await self._catalog_dirty.wait()
                self._catalog_dirty.clear()
                with_catalog = True
            except TimeoutError:
                pass  # the regular heartbeat period elapsed
            try:
                with_catalog = await self._beat(with_catalog=with_catalog)
            except Exception as exc:  # noqa: BLE001 - keep beating through discovery restarts
                logger.warning("heartbeat failed: %s", exc)

    def _task_only(self, tool: str) -> bool:
        # An input_first tool's synchronous calls are its MRTR rounds (it asks for input
        # before it becomes a task): the gateway decides which call becomes the task.
        tasks = self._pool.tasks
        if tasks is not None and tool in tasks.input_first:
            return False
        found = next((t for t in self._core.hosted.catalog.tools if t.get("name") == tool), None)
        return found is not None and task_support(tasks, found) == "required"

    async def deliver(self, frames: list[Frame], prompt: bool = False) -> list[Completion]:
        """Start serving ``frames``; answers with the completions held for the router.

        ``prompt``: report every completion at once (the router's breaker is not closed).
        """
        self._ports.reports.received(len(frames), prompt=prompt)
        self._core.deliver(frames)
        return await self._ports.reports.answer()

    async def call(self, frames: list[Frame]) -> DirectOutcome:
        """Calls a client sent here directly: those taken are answered in the return (or
        named as still running, see :meth:`collect`); the rest are bounced."""
        return await self._direct_call(frames)

    async def direct_address(self) -> tuple[str, str] | None:
        """This worker's node and the Unix socket where clients on it send :meth:`call`
        and :meth:`collect` (see :mod:`cluster.backends.direct_socket`); None until the
        server started."""
        if self._direct_path is None:
            return None
        return self._core.identity.node_id, self._direct_path

    async def _direct_call(self, frames: list[Frame]) -> DirectOutcome:
        core, ports = self._core, self._ports
        usable = self._active and not core.draining and ports.direct_open
        room = max(0, core.identity.capacity - core.in_flight) if usable else 0
        taken, bounced = frames[:room], frames[room:]
        if bounced:
            ports.report_direct()  # the router answers with the breaker's state now
        if not taken:
            closed = not self._active or core.draining or not ports.breaker_closed
            return DirectOutcome([], bounced, closed=closed)
        accepted, refused = ports.direct.begin(taken)
        core.deliver(accepted, routed=False)
        ports.report_direct()
        outcome = await ports.direct.collect([f.envelope.correlation_key for f in accepted])
        return DirectOutcome(refused + outcome.answers, bounced, outcome.running)

    async def breaker_opened(self) -> None:
        """The router's word that this pool's breaker opened: direct calls are bounced to
        the router from now on, until its answer to a report says it closed again."""
        self._ports.direct_open = self._ports.breaker_closed = False

    async def collect(self, keys: list[CorrelationKey]) -> DirectOutcome:
        """The answers of direct calls still running at an earlier return."""
        return await self._ports.direct.collect(keys)

    async def cancel(self, keys: list[CorrelationKey]) -> None:
        if self._source is not None:
            self._source.withdraw(keys)
        await self._core.cancel(keys)

    async def answer(self, frames: list[Frame]) -> None:
        await self._core.answer(frames)

    async def drain(self, frames_sent: int, timeout_s: float) -> bool:
        """Finish everything the router sent, stop heartbeating, close the server."""
        if self._source is not None:
            await self._source.stop(timeout_s)  # committed and out of the group first
        lingering: float | None = None
        if self._ports.direct.ever and self._link is not None and self._source is None:
            self._core.draining = True  # direct calls are bounced from now on
            lingering = time.monotonic()
            with contextlib.suppress(Exception):  # the periodic beats say it too
                await self._beat(with_catalog=False)
        if self._export is not None:
            self._take_calls()
            self._export.flush()  # the last calls' counts reach Ray before the actor ends
        finished = await self._core.drain(frames_sent, timeout_s)
        if self._beats is not None:
            self._beats.cancel()
        # Announce "draining" where the router delivers (a broker worker's source is
        # closed by now); a worker that never started registered nowhere.
        if self._link is not None and self._source is None:
            await self._beat(with_catalog=False)
        await self._ports.replies.drain()
        self._ports.reports.flush()
        await self._ports.completions.drain()
        if lingering is not None:  # a grace timer, not synchronisation: see _DIRECT_LINGER_S
            await asyncio.sleep(max(0.0, _DIRECT_LINGER_S - (time.monotonic() - lingering)))
        await self._direct_listener.close()
        self._stopped.set()
        return finished

    async def wait_stopped(self) -> None:
        """Returns when the worker stopped; fails when the actor dies (for supervisors)."""
        await self._stopped.wait()

    async def status(self) -> dict[str, Any]:
        core = self._core
        return {
            "actor_name": core.identity.actor_name,
            "pool": core.identity.pool,
            "status": str(core.status()),
            "in_flight": core.in_flight,
            "served": core.served,
            "node_id": core.identity.node_id,
            "restarts": core.hosted.restarts,
            "pid": _pid(),
        }


def _pid() -> int:
    return os.getpid()


def _longest_run_s(pool: PoolConfig) -> float:
    """The longest any call of ``pool`` may run (a task's run timeout may exceed the
    pool's call timeout)."""
    tasks = pool.tasks.run_timeout_s if pool.tasks is not None else None
    return max(pool.timeout_s, tasks or 0.0)
