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
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

import ray
import uvicorn
from mcp.server.stdio import stdio_server

from cluster.bus import BusAlreadyRunning, launch_bus, stop_bus
from cluster.cli.interrupts import StartInterrupted, signals_cancel
from cluster.cli.local_buses import claim_bus_name, record_bus_address
from cluster.cli.preflight import check_pools
from cluster.client import BusClient
from cluster.config import BusConfig, load_config
from cluster.gateway.app import LOOPBACK_HOSTS, QuietServer, http_app
from cluster.gateway.server import Gateway
from cluster.naming import NAMESPACE
from transports.errors import BusError

__all__ = ["add_parser", "serve"]

logger = logging.getLogger(__name__)


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

    ``ready(port)`` is called once serving (``None`` for stdio); setting ``stop`` ends
    serving like a signal does (for embedding and tests). ``sock``, if given, is the
    listening socket to serve on (bound by the caller before anything was started).
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
            try:
                client = await BusClient.connect(config.name)
            except BaseException:
                if launched:
                    await asyncio.shield(stop_bus(config.name))
                raise
        except asyncio.CancelledError:
            if not interrupt.fired:
                raise
            raise StartInterrupted(config.name) from None
    background: list[asyncio.Task[None]] = []
    gateway: Gateway | None = None
    try:
        gateway = Gateway(
            client,
            name=f"raybus-{config.name}",
            call_timeout_s=config.gateway.call_timeout_s,
            policy=config.gateway.policy,
        )
        background.append(loop.create_task(gateway.watch_list_changes()))
        if stdio:
            task = loop.create_task(_serve_stdio(gateway, ready))
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, task.cancel)
            if stop is not None:
                background.append(loop.create_task(_when_set(stop, task.cancel)))
            with contextlib.suppress(asyncio.CancelledError):
                await task
        else:
            settings = config.gateway
            if sock is not None:
                chosen_port = int(sock.getsockname()[1])
            else:
                chosen_port = settings.port if port is None else port
            server = QuietServer(
                uvicorn.Config(
                    http_app(gateway, config, chosen_port),
                    host=settings.host,
                    port=chosen_port,
                    log_level="warning",
                    lifespan="on",
                    ws_max_size=settings.max_body_bytes,
                )
            )
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, setattr, server, "should_exit", True)
            if stop is not None:
                exit_on_stop = _when_set(stop, lambda: setattr(server, "should_exit", True))
                background.append(loop.create_task(exit_on_stop))
            if ready is not None:
                background.append(loop.create_task(_announce(server, ready)))
            await server.serve(sockets=[sock] if sock is not None else None)
    finally:
        for helper in background:
            helper.cancel()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        if gateway is not None:
            await gateway.aclose()  # the audit records still queued
        await client.close()
        if launched:
            await stop_bus(config.name)


async def _when_set(event: asyncio.Event, action: Any) -> None:
    await event.wait()
    action()


async def _serve_stdio(gateway: Gateway, ready: Any) -> None:
    async with stdio_server() as (read, write):
        if ready is not None:
            ready(None)
        await gateway.server.run(read, write, gateway.server.create_initialization_options())


async def _announce(server: uvicorn.Server, ready: Any) -> None:
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to await
        await asyncio.sleep(0.02)
    sockets = [s for srv in server.servers for s in srv.sockets]
    ready(sockets[0].getsockname()[1] if sockets else None)


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
                resources.enter_context(claim_bus_name(config.name))
            sock = None
            if not args.stdio:
                port = settings.port if args.port is None else args.port
                sock = resources.enter_context(_bind(settings.host, port))
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


@contextlib.contextmanager
def _bind(host: str, port: int) -> Iterator[socket.socket]:
    """The gateway's listening socket, bound now so a busy port fails before Ray starts.

    Raises:
        GatewayBindError: the address is in use or cannot be bound.
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise GatewayBindError(host, port, reason) from None
    with sock:
        yield sock


class GatewayBindError(BusError):
    """The gateway cannot listen where it is configured to."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(host, port, reason)
        self.host = host
        self.port = port
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot serve MCP on {self.host}:{self.port}: {self.reason}"


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
