"""``raybus start | stop | call``: run and use a bus on an existing Ray cluster.

``call`` makes one tool call, or with ``--batch FILE.jsonl`` one per line of a file (see
``cluster.cli.batch``).

``start`` launches a detached bus and returns; any later process attaches to it by name.
All commands join the cluster at ``--address``, or find it (see ``cluster.cli.clusters``).
``raybus status`` lives in ``cluster.cli.status``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from cluster.bus import launch_bus, stop_bus
from cluster.cli import batch
from cluster.cli.clusters import add_address_argument, run_joined
from cluster.cli.failures import fail, report
from cluster.cli.interrupts import StartInterrupted, signals_cancel
from cluster.cli.local_buses import BusNameTaken, local_bus_address
from cluster.client import BusClient, CallError
from cluster.config import BusConfig, load_config
from transports.errors import BusError

__all__ = ["add_parsers"]


def _start_command(args: argparse.Namespace) -> int:
    """The config is read before joining Ray: a bad file never waits for a cluster."""
    try:
        args.bus_config = load_config(args.config)
    except BusError as exc:
        return report(exc, 2)
    return run_joined(_start, args)


async def _start(args: argparse.Namespace) -> int:
    config: BusConfig = args.bus_config
    if local_bus_address(config.name) is not None:  # `raybus up` runs it on its own Ray
        raise BusNameTaken(config.name, None, local_bus_address(config.name))
    with signals_cancel(asyncio.get_running_loop()) as interrupt:
        try:
            info = await launch_bus(config)
        except asyncio.CancelledError:
            if not interrupt.fired:
                raise
            raise StartInterrupted(config.name) from None
    print(f"bus {info['bus']!r} is up: {info['workers']}")
    return 0


async def _stop(args: argparse.Namespace) -> int:
    await stop_bus(args.bus)
    print(f"bus {args.bus!r} stopped")
    return 0


def _call_command(args: argparse.Namespace) -> int:
    """Check the input before joining Ray: bad input never waits for a cluster."""
    if (args.tool is None) == (args.batch is None):
        return fail("give a TOOL (and its ARGUMENTS) or --batch FILE, not both")
    if args.batch is None:
        if args.output is not None:
            return fail("--output goes with --batch")
        try:
            args.arguments = json.loads(args.arguments)
        except json.JSONDecodeError as exc:
            return fail(f"arguments are not JSON: {exc}")
        if not isinstance(args.arguments, dict):
            return fail("arguments must be a JSON object")
        return run_joined(_call, args)
    try:
        checked = batch.check_file(Path(args.batch))
    except batch.BatchInputError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"cannot read {args.batch}: {exc.strerror or exc}")
    if checked.calls == 0:
        return 0
    if not args.output:
        return run_joined(lambda args: batch.run(args, sys.stdout, checked), args)
    try:
        output = open(args.output, "w", encoding="utf-8")  # noqa: SIM115 - closed just below
    except OSError as exc:
        return fail(f"cannot write {args.output}: {exc.strerror or exc}")
    with output:
        return run_joined(lambda args: batch.run(args, output, checked), args)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


async def _call(args: argparse.Namespace) -> int:
    async with await BusClient.connect(args.bus) as client:
        try:
            result = await client.call_tool(args.tool, args.arguments, timeout_s=args.timeout)
        except CallError as exc:
            return report(exc, 1)
    print(json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2))
    return 1 if result.is_error else 0


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def command(name: str, help_text: str, handler: Any) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text)
        add_address_argument(parser)
        parser.set_defaults(run=lambda args: run_joined(handler, args))
        return parser

    start = command("start", "launch a detached bus from a YAML config", _start)
    start.add_argument("config")
    start.set_defaults(run=_start_command)
    command("stop", "drain and stop a running bus", _stop).add_argument("bus")
    call = command("call", "call a tool on a running bus, or one per line of a file", _call)
    call.set_defaults(run=_call_command)
    call.add_argument("bus")
    call.add_argument("tool", nargs="?", help="the tool (or use --batch)")
    call.add_argument("arguments", nargs="?", default="{}", help="JSON object (default {})")
    call.add_argument("--timeout", type=float, default=60.0, help="seconds per call (default 60)")
    call.add_argument(
        "--batch",
        metavar="FILE",
        help='JSON lines, one call a line: {"tool": "echo", "arguments": {...}, "id": ...}; '
        "results go out one JSON line per call as they complete",
    )
    call.add_argument(
        "--output", metavar="FILE", help="write the batch's results here (default stdout)"
    )
    call.add_argument(
        "--concurrency", type=_positive, default=64, help="batch calls in flight (default 64)"
    )
