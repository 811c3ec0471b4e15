"""``raybus up CONFIG``: a bus plus its gateway, serving MCP until interrupted.

Starts a local Ray (or joins ``--address``), launches the bus described in CONFIG (or
attaches to it when it already runs) and serves MCP Streamable HTTP on
``http://<gateway.host>:<gateway.port><gateway.path>`` - or, with ``--stdio``, on this
process's stdin/stdout so a desktop client can launch it. SIGINT / SIGTERM stop serving,
drain the bus it started and shut Ray down. With ``--metrics-port PORT`` it also serves
the bus's metrics in Prometheus text at ``http://127.0.0.1:PORT/metrics``
(:mod:`cluster.metrics.endpoint`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import ray
from ray.exceptions import RayError

from actors.router.regions import placement_notes
from cluster.bus import BusAlreadyRunning, launch_bus, start_spares, stop_bus
from cluster.cli.failures import fail, report
from cluster.cli.interrupts import StartInterrupted, signals_cancel
from cluster.cli.join import ClusterUnreachable, join_cluster, probe_address
from cluster.cli.local_buses import claim_bus_name, record_bus_address
from cluster.cli.preflight import check_pools, check_tracing, gateway_problem
from cluster.client import BusClient
from cluster.config import BusConfig, load_config
from cluster.gateway.listener import LOOPBACK_HOSTS, bound
from cluster.local_ray import start_deferred_monitor, start_local_ray
from cluster.metrics.endpoint import (
    METRICS_HOST,
    MetricsCollector,
    Sources,
    metrics_listener,
    metrics_server,
)
from cluster.metrics.ray_export import RayExport, export_forever
from cluster.metrics.registry import MetricsRegistry
from cluster.metrics.sources import bus_sources
from cluster.naming import NAMESPACE
from cluster.ray_actors.gateway import GatewayReplicas
from cluster.telemetry import install_tracing
from transports.errors import BusError

__all__ = ["add_parser", "serve"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_METRICS_START_TIMEOUT_S = 30.0
_METRICS_STOP_TIMEOUT_S = 10.0


async def serve(
    config: BusConfig,
    *,
    stdio: bool,
    port: int | None = None,
    ready: Any = None,
    stop: asyncio.Event | None = None,
    sock: socket.socket | None = None,
    metrics_sock: socket.socket | None = None,
) -> None:
    """Launch (or attach to) the bus and serve its gateway until SIGINT / SIGTERM.

    Over HTTP the gateway runs as Ray actors, one replica per node
    (:class:`~cluster.ray_actors.gateway.GatewayReplicas`); with ``stdio`` it runs here,
    on this process's stdin/stdout. ``ready(port)`` is called once serving (the port of
    the first replica; ``None`` for stdio); setting ``stop`` ends serving like a signal
    does (for embedding and tests). ``sock``, if given, holds the port to serve on (bound
    by the caller before anything was started, released when the replicas bind it).
    ``metrics_sock``, if given, serves ``/metrics`` for the bus while the gateway serves.
    A signal while the bus starts cancels the start, which tears down what it started.
    """
    loop = asyncio.get_running_loop()
    launched = False
    if sock is not None:
        port = int(sock.getsockname()[1])
    replicas = (
        None if stdio else GatewayReplicas(config, config.gateway.port if port is None else port)
    )
    try:
        with signals_cancel(loop) as interrupt:
            try:
                if replicas is not None:
                    replicas.spawn()  # their start overlaps the bus's
                try:
                    # Spares wait until the gateway serves: on two cores they would
                    # compete with its start (and the other pools') for the same CPU.
                    await launch_bus(config, spares_later=replicas is not None)
                    launched = True
                except BusAlreadyRunning:
                    print(
                        f"raybus: bus {config.name!r} already runs on this Ray cluster: "
                        "serving a gateway for it (it keeps running when this stops)",
                        file=sys.stderr,
                        flush=True,
                    )
            except asyncio.CancelledError:
                if not interrupt.fired:
                    raise
                raise StartInterrupted(config.name) from None
    except BaseException:
        if replicas is not None:
            await replicas.stop()
        raise
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    background: list[asyncio.Task[None]] = []
    if stop is not None:
        background.append(loop.create_task(_when_set(stop, stopping.set)))
    try:
        if replicas is None:
            await _serve_stdio(config, ready, stopping, metrics_sock)
        else:
            if sock is not None:
                sock.close()  # the replica on this node binds it now
            await _serve_http(config, replicas, ready, stopping, metrics_sock, launched)
    finally:
        for helper in background:
            helper.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if launched:
            await stop_bus(config.name)


async def _serve_http(
    config: BusConfig,
    replicas: GatewayReplicas,
    ready: Any,
    stopping: asyncio.Event,
    metrics_sock: socket.socket | None,
    launched: bool,
) -> None:
    try:
        started = await _until(stopping, replicas.reconcile())
        if started is None:
            return
        sources = bus_sources(config, replicas=replicas)
        async with _serving_metrics(config.name, sources, metrics_sock):
            for info in started[1:]:
                print(
                    f"raybus: also serving MCP at {replicas.url(info)} (node {info.node_id[:8]})",
                    file=sys.stderr,
                    flush=True,
                )
            if ready is not None:
                ready(started[0].port if started else None)
            loop = asyncio.get_running_loop()
            background = [loop.create_task(replicas.keep())]
            if launched:  # off the ready path: a slow lookup must not delay serving
                background.append(loop.create_task(_start_spares(config.name)))
            try:
                await stopping.wait()
            finally:
                for task in background:
                    task.cancel()
    finally:
        await replicas.stop()


async def _start_spares(bus: str) -> None:
    try:
        await start_spares(bus)
    except (BusError, RayError) as exc:  # the bus serves without them; a scale-up is slower
        logger.warning("warm spares of bus %s not started: %s", bus, exc)


@contextlib.asynccontextmanager
async def _serving_metrics(
    bus: str, sources: Sources, sock: socket.socket | None
) -> AsyncIterator[None]:
    """Serve ``/metrics`` on ``sock`` (if given) for the duration of the block."""
    if sock is None:
        yield
        return
    server = metrics_server(MetricsCollector(bus, sources))
    serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(_METRICS_START_TIMEOUT_S):
            while not server.started:
                if serving.done():
                    serving.result()  # raises why it stopped
                    raise RuntimeError("the metrics server stopped while starting")
                await asyncio.sleep(0.02)  # polling uvicorn's started flag
        port = int(sock.getsockname()[1])
        print(
            f"raybus: serving metrics at http://{METRICS_HOST}:{port}/metrics",
            file=sys.stderr,
            flush=True,
        )
        yield
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_METRICS_STOP_TIMEOUT_S):
                await serving
        serving.cancel()


async def _until(stopping: asyncio.Event, work: Awaitable[T]) -> T | None:
    """``work``'s result, or None once ``stopping`` is set first (``work`` is cancelled)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stopping.wait())
    await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def _when_set(event: asyncio.Event, action: Any) -> None:
    await event.wait()
    action()


async def _serve_stdio(
    config: BusConfig, ready: Any, stopping: asyncio.Event, metrics_sock: socket.socket | None
) -> None:
    # The MCP SDK is loaded only here: over HTTP the gateway runs in its replicas, and
    # this process starting the bus should not pay a second of imports for it.
    from cluster.gateway.server import Gateway
    from cluster.gateway.stdio_front import checked_stdio_server
    from cluster.tasks.remote import gateway_tasks_for
    from transports.codec import DecodeLimits

    install_tracing("gateway")  # this process is the gateway (HTTP replicas do their own)
    client = await BusClient.connect(config.name)
    registry = MetricsRegistry(config.name)
    gateway = Gateway(
        client,
        name=f"raybus-{config.name}",
        call_timeout_s=config.gateway.call_timeout_s,
        policy=config.gateway.policy,
        metrics=registry,
        tasks=gateway_tasks_for(config),
        idempotency_ttl_s=config.idempotency.ttl_s,
    )
    loop = asyncio.get_running_loop()
    watcher = loop.create_task(gateway.watch_list_changes())
    exporter = loop.create_task(export_forever(RayExport(registry)))
    sources = bus_sources(config, local=registry)
    try:
        async with (
            _serving_metrics(config.name, sources, metrics_sock),
            checked_stdio_server(
                DecodeLimits(max_message_bytes=config.gateway.max_body_bytes),
                gateway.audit,
                gateway.refusals,
            ) as (read, write),
        ):
            if ready is not None:
                ready(None)
            options = gateway.server.create_initialization_options()
            await _until(stopping, gateway.server.run(read, write, options))
    finally:
        watcher.cancel()
        exporter.cancel()
        await gateway.aclose()  # the audit records still queued
        await client.close()


def _run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except BusError as exc:
        return report(exc, 2)
    settings = config.gateway
    refused = None if args.stdio else gateway_problem(config)
    if refused is not None:
        return fail(f"refusing to bind {settings.host}: {refused}")
    if not args.stdio and settings.host not in LOOPBACK_HOSTS and settings.tls is None:
        print(
            f"raybus: warning: serving {settings.host} without TLS: bearer tokens cross the "
            "network in cleartext (set gateway.tls)",
            file=sys.stderr,
            flush=True,
        )
    for note in placement_notes(config.router.regions, config.pools):  # as config check says
        print(f"raybus: warning: {note}", file=sys.stderr, flush=True)
    # Everything that can be known without Ray is checked before Ray starts (~20 s on
    # two cores): the pools' modules and commands, and the port; or, joining a cluster,
    # that it answers at its address (Ray alone would retry for minutes).
    with contextlib.ExitStack() as resources:
        try:
            if args.address:
                probe_address(args.address)
            else:
                check_pools(config)
                check_tracing(config)
                resources.enter_context(claim_bus_name(config.name))
            sock = None
            if not args.stdio:
                port = settings.port if args.port is None else args.port
                sock = resources.enter_context(bound(settings.host, port))
            metrics_sock = None
            if args.metrics_port is not None:
                metrics_sock = resources.enter_context(metrics_listener(args.metrics_port))
        except BusError as exc:
            return report(exc, 2)
        return _run_bus(args, config, sock, metrics_sock)


def _run_bus(
    args: argparse.Namespace,
    config: BusConfig,
    sock: socket.socket | None,
    metrics_sock: socket.socket | None,
) -> int:
    settings = config.gateway
    if args.address:
        try:
            join_cluster(args.address)
        except ClusterUnreachable as exc:
            return report(exc, 2)
    else:
        start_local_ray(args.num_cpus, namespace=NAMESPACE)  # always a Ray of its own
        record_bus_address(config.name, ray.get_runtime_context().gcs_address)

    def announce(port: int | None) -> None:
        if port is not None:
            print(
                f"raybus: serving MCP at {settings.url(port)}",
                file=sys.stderr,
                flush=True,
            )
        start_deferred_monitor()  # what `ray status` reads, off the start's way

    try:
        asyncio.run(
            serve(config, stdio=args.stdio, ready=announce, sock=sock, metrics_sock=metrics_sock)
        )
    except KeyboardInterrupt:
        return 0
    except BusError as exc:
        return report(exc, 1)
    finally:
        ray.shutdown()
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "up", help="run a bus and serve MCP (HTTP, or --stdio) until interrupted"
    )
    parser.add_argument("config", help="bus YAML")
    parser.add_argument("--stdio", action="store_true", help="serve MCP on stdin/stdout")
    parser.add_argument(
        "--port", type=int, default=None, help="override gateway.port (0 = any free)"
    )
    parser.add_argument(
        "--address",
        default=None,
        help="join this Ray cluster instead of starting one: host:port (the GCS), "
        "ray://host:10001 or auto",
    )
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs for a local Ray (default 2)")
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="also serve the bus's metrics (Prometheus text) at http://127.0.0.1:PORT/metrics",
    )
    parser.set_defaults(run=_run)


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 meaning any free one."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port
