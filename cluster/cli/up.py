"""``raybus up CONFIG``: a bus plus its gateway, serving MCP until interrupted.

Starts a local Ray (or joins ``--address``), launches the bus described in CONFIG (or
attaches to it when it already runs) and serves MCP Streamable HTTP on
``http://<gateway.host>:<gateway.port><gateway.path>`` - or, with ``--stdio``, on this
process's stdin/stdout so a desktop client can launch it. SIGINT / SIGTERM stop serving,
drain the bus it started and shut Ray down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

import ray
from mcp.server.stdio import stdio_server

from cluster.bus import BusAlreadyRunning, launch_bus, stop_bus
from cluster.cli.interrupts import StartInterrupted, signals_cancel
from cluster.cli.local_buses import claim_bus_name, record_bus_address
from cluster.cli.preflight import check_pools, check_tracing
from cluster.client import BusClient
from cluster.config import BusConfig, load_config
from cluster.gateway.app import LOOPBACK_HOSTS, bound
from cluster.gateway.server import Gateway
from cluster.naming import NAMESPACE
from cluster.ray_actors.gateway import GatewayReplicas
from cluster.telemetry import install_tracing
from transports.errors import BusError

__all__ = ["add_parser", "serve"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def serve(
    config: BusConfig,
    *,
    stdio: bool,
    port: int | None = None,
    ready: Any = None,
    stop: asyncio.Event | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Launch (or attach to) the bus and serve its gateway until SIGINT / SIGTERM.

    Over HTTP the gateway runs as Ray actors, one replica per node
    (:class:`~cluster.ray_actors.gateway.GatewayReplicas`); with ``stdio`` it runs here,
    on this process's stdin/stdout. ``ready(port)`` is called once serving (the port of
    the first replica; ``None`` for stdio); setting ``stop`` ends serving like a signal
    does (for embedding and tests). ``sock``, if given, holds the port to serve on (bound
    by the caller before anything was started, released when the replicas bind it).
    A signal while the bus starts cancels the start, which tears down what it started.
    """
    loop = asyncio.get_running_loop()
    launched = False
    with signals_cancel(loop) as interrupt:
        try:
            try:
                await launch_bus(config)
                launched = True
            except BusAlreadyRunning:
                print(
                    f"raybus: bus {config.name!r} already runs on this Ray cluster: serving "
                    "a gateway for it (it keeps running when this stops)",
                    file=sys.stderr,
                    flush=True,
                )
        except asyncio.CancelledError:
            if not interrupt.fired:
                raise
            raise StartInterrupted(config.name) from None
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    background: list[asyncio.Task[None]] = []
    if stop is not None:
        background.append(loop.create_task(_when_set(stop, stopping.set)))
    try:
        if stdio:
            await _serve_stdio(config, ready, stopping)
        else:
            if sock is not None:
                chosen_port = int(sock.getsockname()[1])
                sock.close()  # the replica on this node binds it now
            else:
                chosen_port = config.gateway.port if port is None else port
            await _serve_http(config, chosen_port, ready, stopping)
    finally:
        for helper in background:
            helper.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if launched:
            await stop_bus(config.name)


async def _serve_http(config: BusConfig, port: int, ready: Any, stopping: asyncio.Event) -> None:
    replicas = GatewayReplicas(config, port)
    try:
        started = await _until(stopping, replicas.reconcile())
        if started is None:
            return
        for info in started[1:]:
            print(
                f"raybus: also serving MCP at {replicas.url(info)} (node {info.node_id[:8]})",
                file=sys.stderr,
                flush=True,
            )
        if ready is not None:
            ready(started[0].port if started else None)
        keeper = asyncio.get_running_loop().create_task(replicas.keep())
        try:
            await stopping.wait()
        finally:
            keeper.cancel()
    finally:
        await replicas.stop()


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


async def _serve_stdio(config: BusConfig, ready: Any, stopping: asyncio.Event) -> None:
    install_tracing("gateway")  # this process is the gateway (HTTP replicas do their own)
    client = await BusClient.connect(config.name)
    gateway = Gateway(
        client,
        name=f"raybus-{config.name}",
        call_timeout_s=config.gateway.call_timeout_s,
        policy=config.gateway.policy,
    )
    loop = asyncio.get_running_loop()
    watcher = loop.create_task(gateway.watch_list_changes())
    try:
        async with stdio_server() as (read, write):
            if ready is not None:
                ready(None)
            options = gateway.server.create_initialization_options()
            await _until(stopping, gateway.server.run(read, write, options))
    finally:
        watcher.cancel()
        await gateway.aclose()  # the audit records still queued
        await client.close()


def _run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except BusError as exc:
        print(f"raybus: {exc}", file=sys.stderr)
        return 2
    settings = config.gateway
    if not args.stdio and settings.host not in LOOPBACK_HOSTS and not settings.policy.tokens:
        # Refuse to expose an unauthenticated gateway beyond this machine.
        reason = "only loopback is allowed without authentication"
        print(f"raybus: refusing to bind {settings.host}: {reason}", file=sys.stderr)
        return 2
    # Everything that can be known without Ray is checked before Ray starts (~20 s on
    # two cores): the pools' modules and commands, and the port.
    with contextlib.ExitStack() as resources:
        try:
            if not args.address:
                check_pools(config)
                check_tracing(config)
                resources.enter_context(claim_bus_name(config.name))
            sock = None
            if not args.stdio:
                port = settings.port if args.port is None else args.port
                sock = resources.enter_context(bound(settings.host, port))
        except BusError as exc:
            print(f"raybus: {exc}", file=sys.stderr)
            return 2
        return _run_bus(args, config, sock)


def _run_bus(args: argparse.Namespace, config: BusConfig, sock: socket.socket | None) -> int:
    settings = config.gateway
    if args.address:
        ray.init(address=args.address, namespace=NAMESPACE, log_to_driver=False)
    else:
        ray.init(
            num_cpus=args.num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            namespace=NAMESPACE,
        )
        record_bus_address(config.name, ray.get_runtime_context().gcs_address)

    def announce(port: int | None) -> None:
        if port is not None:
            print(
                f"raybus: serving MCP at http://{settings.host}:{port}{settings.path}",
                file=sys.stderr,
                flush=True,
            )

    try:
        asyncio.run(serve(config, stdio=args.stdio, ready=announce, sock=sock))
    except KeyboardInterrupt:
        return 0
    except BusError as exc:
        print(f"raybus: {exc}", file=sys.stderr)
        return 1
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
        "--address", default=None, help="join this Ray cluster instead of starting one"
    )
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs for a local Ray (default 2)")
    parser.set_defaults(run=_run)
