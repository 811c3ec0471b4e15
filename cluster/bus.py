"""Launching, finding and stopping a bus on a Ray cluster.

A bus is three detached, named control actors (discovery, router, supervisor) plus the
workers the supervisor creates. Control actors restart if their process dies
(``max_restarts=-1``); a restarted router re-subscribes to discovery on its next call and
a restarted supervisor adopts the workers that are still alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import ray
from ray.exceptions import RayError

from cluster.backends.base import Backend, backend_for
from cluster.config import BusConfig, PoolConfig
from cluster.idempotency import ledger_args
from cluster.namespaces import NameCollision, first_collision
from cluster.naming import (
    NAMESPACE,
    ControlPart,
    actor_names,
    get_actor,
    get_actor_async,
    process_of,
)
from cluster.placement import read_cluster
from cluster.ray_actors.control import ControlActor, hosts_autoscaler
from cluster.ray_actors.keys import KeysActor, forget_keys
from cluster.ray_actors.ledger import LedgerActor
from cluster.ray_actors.restarts import CONTROL_ACTOR_OPTIONS
from cluster.ray_actors.router import RouterActor
from cluster.ray_actors.supervisor import PoolStartFailed
from cluster.ray_actors.task_store import TaskStoreActor
from cluster.tasks.journals import delete_journal
from cluster.tasks.settings import runs_tasks
from cluster.triggers.launch import (
    TriggerStartFailed,
    start_triggers,
    stop_triggers,
    trigger_status,
)
from cluster.worker_options import env_names
from transports.errors import BusError, BusTimeout, ConnectionClosed

__all__ = [
    "BusAlreadyRunning",
    "NameCollision",
    "PoolStartFailed",
    "TriggerStartFailed",
    "bus_endpoints",
    "bus_status",
    "launch_bus",
    "placement_summary",
    "running_buses",
    "start_spares",
    "stop_bus",
]

logger = logging.getLogger(__name__)

_CONTROL_OPTIONS = CONTROL_ACTOR_OPTIONS
_ControlActor: Any = ray.remote(ControlActor)
# Stopping the autoscaler (its round, then its lag clients) waits this long at most.
_AUTOSCALER_STOP_S = 15.0
# A trigger finishes the records in hand at most this long when the bus stops.
_TRIGGER_DRAIN_S = 30.0


class BusAlreadyRunning(BusError):
    def __init__(self, bus: str) -> None:
        super().__init__(bus)
        self.bus = bus

    def __str__(self) -> str:
        return f"a bus named {self.bus!r} is already running: attach to it or stop it first"


def _exists(name: str) -> bool:
    try:
        get_actor(name)
    except ConnectionClosed:
        return False
    return True


async def launch_bus(
    config: BusConfig, *, ready_timeout_s: float = 120.0, spares_later: bool = False
) -> dict[str, Any]:
    """Start a bus and wait until every pool has its minimum of workers routed.

    Start-up watches its workers: the first one that cannot start ends it at once with
    the pool's name and the reason. Warm spares start in the background once the
    pools are up, or with ``spares_later`` only when :func:`start_spares` is called
    (``raybus up`` does so once its gateway serves, so they never slow its start).
    Whatever ends start-up early (a failure, the timeout, cancellation such as Ctrl-C)
    tears down what was started, so no half bus is left behind.

    Raises:
        BusAlreadyRunning: a bus of that name exists in this cluster.
        MissingCredentials: SQS against a remote endpoint with no credentials anywhere.
        PoolStartFailed: a pool's worker could not start (bad import path, missing
            command, a server that exits at once, missing broker credentials, ...).
        BusTimeout: the pools were not ready within ``ready_timeout_s`` (the message
            names the pools that were not).
        NameCollision: two pools offer the same tool or prompt name (see
            :mod:`cluster.namespaces`); the message names it and both pools.
    """
    bus = config.name
    backend = backend_for(config)
    config = await backend.settle()  # e.g. SQS credentials: settled here, never in actors
    if await asyncio.to_thread(_exists, actor_names.router(bus)):
        raise BusAlreadyRunning(bus)
    autoscaled = hosts_autoscaler(config)
    try:
        # The first named actor claims the name: a racing launch fails here, before it
        # has anything of ours to tear down. Discovery, the supervisor and the
        # autoscaler share its process (see cluster.ray_actors.control).
        control = _ControlActor.options(
            name=actor_names.control(bus, autoscaled=autoscaled), **_CONTROL_OPTIONS
        ).remote(config)
    except ValueError:
        raise BusAlreadyRunning(bus) from None
    try:
        return await _launch(config, backend, control, ready_timeout_s, spares_later)
    except BaseException:
        await asyncio.shield(_tear_down(bus))
        raise


async def _launch(
    config: BusConfig,
    backend: Backend,
    control: Any,
    ready_timeout_s: float,
    spares_later: bool,
) -> dict[str, Any]:
    bus = config.name
    ledger_ttl_s = backend.ledger_ttl_s
    if ledger_ttl_s is not None:  # at-least-once delivery: one idempotency ledger per bus
        LedgerActor.options(  # type: ignore[attr-defined]
            name=actor_names.ledger(bus), **_CONTROL_OPTIONS
        ).remote(*ledger_args(config, ledger_ttl_s))
    if config.encryption is not None:  # the keyring state every process follows
        KeysActor.options(  # type: ignore[attr-defined]
            name=actor_names.keys(bus), **_CONTROL_OPTIONS
        ).remote(bus, config.encryption)
    # Every control actor is created at once, so their processes start side by side
    # (each is a Python start plus imports, about a second on a loaded 2-core machine);
    # calls to one queue until it is up, and names resolve from creation on.
    router = RouterActor.options(  # type: ignore[attr-defined]
        name=actor_names.router(bus), **_CONTROL_OPTIONS
    ).remote(bus, config.router)
    discovery = ControlPart(control, "discovery")
    supervisor = ControlPart(control, "supervisor")
    # Tasks (long-running tools): a store only for a bus with a pool that runs tools as
    # tasks. Every other bus would pay a process (a second of CPU at start) for nothing.
    tasks = None
    if runs_tasks(config):
        tasks = TaskStoreActor.options(  # type: ignore[attr-defined]
            name=actor_names.tasks(bus), **_CONTROL_OPTIONS
        ).remote(config)
    autoscaler = None
    if hosts_autoscaler(config):
        autoscaler = ControlPart(control, "autoscaler")
    # Workers start meanwhile; their beats and the router's subscription find discovery
    # whenever it is up (both start it if need be), and subscribing replays membership.
    workers_started = supervisor.start.remote(spares=not spares_later)
    await discovery.start.remote()
    await router.start.remote()
    if tasks is not None:
        await tasks.start.remote()
    await _warn_unplaceable(config)
    expected = {p.name: p.min_workers for p in config.pools}
    try:
        async with asyncio.timeout(ready_timeout_s):
            try:
                counts: dict[str, int] = await workers_started
            except PoolStartFailed as exc:  # Ray re-raises it wrapped: unwrap to one line
                cause = getattr(exc, "cause", exc)
                raise PoolStartFailed(cause.pool, cause.reason) from None
            await _wait_routed(router, expected)
    except TimeoutError:
        waiting = await _pools_not_ready(router, expected)
        operation = f"starting bus {bus!r} ({waiting})" if waiting else f"starting bus {bus!r}"
        raise BusTimeout(operation, ready_timeout_s) from None
    # Every pool with workers has registered its catalog by now (the router routes to
    # them): a name two of them offer would route to whichever registered first.
    clash = first_collision(await discovery.collisions.remote(), [p.name for p in config.pools])
    if clash is not None:
        raise clash
    if autoscaler is not None:  # started once the pools are up: nothing to resize before
        await autoscaler.start.remote()
    # Triggers last: their first records' calls find the pools routed.
    await start_triggers(config)
    logger.info("bus %s up: %s", bus, counts)
    return {"bus": bus, "workers": counts}


async def start_spares(bus: str) -> None:
    """Start the warm spares of a bus launched with ``spares_later``."""
    supervisor = await get_actor_async(actor_names.supervisor(bus))
    await supervisor.start_spares.remote()


async def _warn_unplaceable(config: BusConfig) -> None:
    """Say at once when no node could host a pool's worker (it would wait unscheduled).

    Not an error: on an autoscaling cluster (KubeRay) Ray adds a node that fits, and
    until then the start waits like any pending actor, up to its timeout.
    """
    limited = [
        p for p in config.pools if p.min_workers and (p.worker_resources or p.label_selector)
    ]
    if not limited:
        return
    try:
        reading = await asyncio.to_thread(read_cluster)
    except Exception as exc:  # noqa: BLE001 - only an early warning is lost
        logger.debug("no cluster reading for the placement check: %s", exc)
        return
    for pool in limited:
        why = reading.never_fits(pool)
        if why is not None:
            logger.warning(
                "pool %s: %s; its workers wait until such a node joins the cluster",
                pool.name,
                why,
            )


async def _wait_routed(router: Any, expected: dict[str, int]) -> None:
    while True:
        lag: dict[str, dict[str, Any]] = await router.lag.remote()
        if all(lag.get(pool, {}).get("workers", 0) >= n for pool, n in expected.items() if n):
            return
        await asyncio.sleep(0.05)  # polling the router until discovery has told it


async def _pools_not_ready(router: Any, expected: dict[str, int]) -> str:
    """Which pools lack workers, for the timeout message ("" if the router is mute)."""
    try:
        async with asyncio.timeout(5):
            lag: dict[str, dict[str, Any]] = await router.lag.remote()
    except Exception:  # noqa: BLE001 - only a better message is lost
        return ""
    short = [
        f"{pool} {lag.get(pool, {}).get('workers', 0)}/{n} workers"
        for pool, n in expected.items()
        if lag.get(pool, {}).get("workers", 0) < n
    ]
    return "not ready: " + ", ".join(short) if short else ""


async def _tear_down(bus: str) -> None:
    """Kill every actor of a bus that did not finish starting (nothing to drain)."""
    prefix = f"raybus/{bus}/"

    def kill_all() -> None:
        # The supervisor first, so it creates no worker after the sweep below.
        control = [actor_names.supervisor(bus), actor_names.autoscaler(bus)]
        control += [actor_names.router(bus), actor_names.discovery(bus), actor_names.ledger(bus)]
        control += [actor_names.tasks(bus), actor_names.keys(bus)]
        for name in control:
            with contextlib.suppress(ConnectionClosed):
                ray.kill(process_of(get_actor(name)), no_restart=True)
        for name in _raybus_actor_names():
            if name.startswith(prefix):
                with contextlib.suppress(ConnectionClosed, ValueError):
                    ray.kill(get_actor(name), no_restart=True)
        forget_keys(bus)

    try:
        async with asyncio.timeout(30):
            await asyncio.to_thread(kill_all)
    except Exception as exc:  # noqa: BLE001 - the original failure matters more
        logger.warning("could not tear down the partly started bus %s: %s", bus, exc)


async def bus_status(bus: str) -> dict[str, Any]:
    """Pools (lag, breaker), workers and their state.

    Raises:
        ConnectionClosed: no such bus.
    """
    router = await get_actor_async(actor_names.router(bus))
    discovery = await get_actor_async(actor_names.discovery(bus))
    triggers: dict[str, dict[str, Any]] = {}
    lag, outstanding, workers, collisions = await asyncio.gather(
        router.lag.remote(),
        router.outstanding.remote(),
        discovery.workers.remote(),
        discovery.collisions.remote(),
    )
    # The router knows a pool once a worker of it is routed; the supervisor knows every
    # pool from the start, so a pool still starting (or failing to) is listed too.
    with contextlib.suppress(ConnectionClosed):
        supervisor = await get_actor_async(actor_names.supervisor(bus))
        config: BusConfig = await supervisor.config.remote()
        for pool, sizes in (await supervisor.pools.remote()).items():
            row = lag.setdefault(
                pool,
                {"pool": pool, "queued": 0, "oldest_age_s": 0.0, "in_flight": 0}
                | {"workers": 0, "capacity": 0, "breaker": "closed"},
            )
            row.update(target=sizes["target"], starting=sizes["starting"])
            row.update(spares=sizes.get("spares", 0))
            row.update(last_failure=sizes["last_failure"])
            row.update(placement_summary(config.pool(pool)))
        triggers = await trigger_status(bus, config.triggers)
    tasks: dict[str, int] = {}
    with contextlib.suppress(ConnectionClosed):  # a bus started by an older raybus
        store = await get_actor_async(actor_names.tasks(bus))
        tasks = (await store.stats.remote())["tasks"]
    decisions: list[dict[str, Any]] = []
    try:
        autoscaler = await get_actor_async(actor_names.autoscaler(bus))
        # The last resizes, then the latest decision of each pool (usually "holding").
        changes = await autoscaler.decisions.remote(20, changes_only=True)
        latest = await autoscaler.decisions.remote(max(1, len(lag)))
        unique = {(d["at_s"], d["pool"]): d for d in [*changes, *latest]}
        decisions = sorted(unique.values(), key=lambda d: d["at_s"])
    except ConnectionClosed:
        pass  # autoscaling is off for this bus
    return {
        "bus": bus,
        "pools": lag,
        "workers": [
            {
                "name": w.actor_name,
                "pool": w.pool,
                "status": str(w.status),
                "in_flight": outstanding.get(w.actor_name, w.in_flight),
                "node": w.node_id[:8],
            }
            for w in workers
        ],
        "decisions": decisions,
        "tasks": tasks,  # by status: working, input_required, completed, failed, cancelled
        # Each trigger: lag, rate_per_s, in_flight/max_in_flight, ok, dead_lettered, state.
        "triggers": triggers,
        # Names two pools offer (a server's list changed at run time): the first keeps it.
        "collisions": [
            {"kind": c.kind, "name": c.name, "owner": c.owner, "other": c.other} for c in collisions
        ],
    }


def placement_summary(pool: PoolConfig) -> dict[str, Any]:
    """The pool's labels (its region), what its workers reserve and where they may run;
    env by name only."""
    return {
        "labels": dict(pool.labels),
        "resources": pool.worker_resources,
        "label_selector": dict(pool.label_selector),
        "env": env_names(pool.env, pool.runtime_env),
    }


async def bus_endpoints(bus: str) -> dict[str, Any]:
    """The bus's backend and where its gateways serve MCP (for ``raybus status``).

    Kept apart from :func:`bus_status`, which callers poll: these rarely change and cost
    a listing of the cluster's named actors. The backend is None while the bus has no
    supervisor (starting, or stopping).
    """

    async def backend() -> str | None:
        try:
            supervisor = await get_actor_async(actor_names.supervisor(bus))
        except ConnectionClosed:
            return None
        config: BusConfig = await supervisor.config.remote()
        return config.backend

    kind, gateways = await asyncio.gather(backend(), _gateway_urls(bus))
    return {"backend": kind, "gateways": gateways}


async def running_buses() -> list[str]:
    """The names of the buses on the joined Ray cluster (those whose router is up)."""
    named = await asyncio.to_thread(_raybus_actor_names)
    return sorted({bus for name in named if (bus := actor_names.bus_of_router(name))})


def _raybus_actor_names() -> list[str]:
    entries = ray.util.list_named_actors(all_namespaces=True)
    return [e["name"] for e in entries if e["namespace"] == NAMESPACE]


# A replica answers at once unless its node is overloaded; status does not wait longer.
_GATEWAY_ASK_TIMEOUT_S = 10.0


async def _gateway_urls(bus: str) -> list[str]:
    """Where the bus's gateway replicas (``raybus up`` over HTTP) serve MCP."""
    prefix = actor_names.gateway_prefix(bus)
    names = [n for n in await asyncio.to_thread(_raybus_actor_names) if n.startswith(prefix)]

    async def url_of(name: str) -> str | None:
        try:
            async with asyncio.timeout(_GATEWAY_ASK_TIMEOUT_S):
                replica = await get_actor_async(name)
                url: str | None = await replica.url.remote()
                return url
        except (ConnectionClosed, TimeoutError, RayError):
            return None  # gone, or stopping, since it was listed
        except AttributeError:
            return None  # a replica of an older raybus, which cannot say

    return sorted(url for url in await asyncio.gather(*map(url_of, names)) if url)


async def stop_bus(bus: str, *, timeout_s: float = 120.0) -> None:
    """Drain every worker, then stop the control actors. Missing pieces are skipped."""
    # Triggers first, while the pools still answer the calls they have in hand.
    prefix = actor_names.trigger_prefix(bus)
    named = await asyncio.to_thread(_raybus_actor_names)
    await stop_triggers([n for n in named if n.startswith(prefix)], _TRIGGER_DRAIN_S)
    # The autoscaler stops first, so it cannot resize pools while they drain; its broker
    # clients are closed, not dropped with the process (bounded: it may hang).
    with contextlib.suppress(ConnectionClosed):
        autoscaler = await get_actor_async(actor_names.autoscaler(bus))
        try:
            async with asyncio.timeout(_AUTOSCALER_STOP_S):
                await autoscaler.stop.remote()
        except (RayError, TimeoutError, AttributeError) as exc:
            logger.info("autoscaler of bus %s not stopped cleanly: %s", bus, exc)
    names = [actor_names.supervisor(bus), actor_names.router(bus), actor_names.discovery(bus)]
    names += [actor_names.ledger(bus), actor_names.keys(bus)]
    # The task store goes first: it would answer about tasks whose workers are draining.
    with contextlib.suppress(ConnectionClosed):
        ray.kill(await get_actor_async(actor_names.tasks(bus)), no_restart=True)
    try:
        supervisor = await get_actor_async(names[0])
        async with asyncio.timeout(timeout_s):
            await supervisor.shutdown.remote()
    except (ConnectionClosed, TimeoutError) as exc:
        logger.warning("could not drain bus %s cleanly: %s", bus, exc)
    for name in names:
        try:
            ray.kill(process_of(await get_actor_async(name)), no_restart=True)
        except ConnectionClosed:
            continue
    await asyncio.to_thread(forget_keys, bus)  # a later bus of that name starts afresh
    try:  # a stopped bus ends its tasks: their records go with it
        await asyncio.to_thread(delete_journal, bus)
    except Exception as exc:  # noqa: BLE001 - the bus is stopped either way
        logger.warning("could not delete the task records of bus %s: %s", bus, exc)
