"""``raybus start | stop | status | call``: run and use a bus on an existing Ray cluster.

``call`` makes one tool call, or with ``--batch FILE.jsonl`` one per line of a file (see
``cluster.cli.batch``).

``start`` launches a detached bus and returns; any later process attaches to it by name.
All commands join the cluster at ``--address``. Without it, a bus that ``raybus up``
runs on this machine is found on that command's own Ray (see ``cluster.cli.local_buses``);
otherwise ``auto``: the cluster this machine belongs to, as ``ray start`` set it up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import ray

from actors.capacity import format_amounts
from cluster.bus import bus_status, launch_bus, stop_bus
from cluster.cli import batch
from cluster.cli.interrupts import StartInterrupted, signals_cancel
from cluster.cli.join import ClusterUnreachable, join_cluster
from cluster.cli.local_buses import BusNameTaken, local_bus_address, local_bus_auth_mode
from cluster.client import BusClient, CallError
from cluster.config import load_config
from transports.errors import BusError

__all__ = ["add_parsers", "format_status"]


def _address(args: argparse.Namespace) -> str:
    if args.address:
        return str(args.address)
    bus = getattr(args, "bus", None)
    local = local_bus_address(bus) if bus else None
    if local is None or bus is None:
        return "auto"
    mode = local_bus_auth_mode(bus)
    if mode is not None and "RAY_AUTH_MODE" not in os.environ:
        # The edge: this driver joins with its Ray's auth mode. Ray read the variable
        # when it was imported, so its config is re-read, as Ray's own ray.init does
        # when it turns token auth on.
        os.environ["RAY_AUTH_MODE"] = mode
        from ray._raylet import Config  # type: ignore[attr-defined]

        Config.initialize("")
    return local


def _run(handler: Any, args: argparse.Namespace) -> int:
    address = _address(args)
    try:
        join_cluster(address)
    except ClusterUnreachable as exc:
        print(f"raybus: {exc}", file=sys.stderr)
        return 2
    try:
        code: int = asyncio.run(handler(args))
        return code
    except BusError as exc:
        print(f"raybus: {exc}", file=sys.stderr)
        return 1
    finally:
        ray.shutdown()


async def _start(args: argparse.Namespace) -> int:
    config = load_config(args.config)
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


def format_status(status: dict[str, Any]) -> str:
    """The status as an aligned text table."""
    pool_row = "{:<14}{:>8}{:>8}{:>10}{:>10}  {}"
    lines = [f"bus {status['bus']}", ""]
    lines.append(pool_row.format("pool", "workers", "queued", "oldest s", "in flight", "breaker"))
    for pool, lag in sorted(status["pools"].items()):
        age = f"{lag['oldest_age_s']:.2f}"
        lines.append(
            pool_row.format(
                pool, lag["workers"], lag["queued"], age, lag["in_flight"], lag["breaker"]
            )
        )
    for pool, lag in sorted(status["pools"].items()):
        placement = _placement_line(lag)
        if placement:
            lines.append(f"  {pool}: {placement}")
        if lag.get("starting"):
            lines.append(f"  {pool}: {lag['starting']} worker(s) starting")
        if lag.get("last_failure"):
            lines.append(f"  {pool}: last worker start failed: {lag['last_failure']}")
    worker_row = "{:<40}{:<14}{:<10}{:>10}  {}"
    lines += ["", worker_row.format("worker", "pool", "status", "in flight", "node")]
    for w in sorted(status["workers"], key=lambda w: (w["pool"], w["name"])):
        lines.append(
            worker_row.format(w["name"], w["pool"], w["status"], w["in_flight"], w["node"])
        )
    decisions = status.get("decisions") or []
    changes = [d for d in decisions if d["desired"] != d["current"]] or decisions[-3:]
    if changes:
        lines += ["", "recent autoscaling decisions"]
        for d in changes[-10:]:
            stamp = time.strftime("%H:%M:%S", time.localtime(d["wall_time"]))
            change = f"{d['current']:>3} -> {d['desired']:<3}"
            lines.append(f"{stamp}  {d['pool']:<14}{change} {d['reason']}")
    return "\n".join(lines)


def _placement_line(row: dict[str, Any]) -> str:
    parts = []
    if row.get("resources"):
        parts.append(f"each worker reserves {format_amounts(row['resources'])}")
    if row.get("label_selector"):
        labels = ", ".join(f"{k}={v}" for k, v in row["label_selector"].items())
        parts.append(f"on nodes with {labels}")
    if row.get("env"):
        parts.append(f"env {', '.join(row['env'])} (values hidden)")
    return "; ".join(parts)


async def _status(args: argparse.Namespace) -> int:
    status = await bus_status(args.bus)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def _refuse(reason: str) -> int:
    print(f"raybus: {reason}", file=sys.stderr)
    return 2


def _call_command(args: argparse.Namespace) -> int:
    """Check the input before joining Ray: bad input never waits for a cluster."""
    if (args.tool is None) == (args.batch is None):
        return _refuse("give a TOOL (and its ARGUMENTS) or --batch FILE, not both")
    if args.batch is None:
        if args.output is not None:
            return _refuse("--output goes with --batch")
        try:
            args.arguments = json.loads(args.arguments)
        except json.JSONDecodeError as exc:
            return _refuse(f"arguments are not JSON: {exc}")
        if not isinstance(args.arguments, dict):
            return _refuse("arguments must be a JSON object")
        return _run(_call, args)
    try:
        total = batch.count_calls(Path(args.batch))
    except batch.BatchInputError as exc:
        return _refuse(str(exc))
    except OSError as exc:
        return _refuse(f"cannot read {args.batch}: {exc.strerror or exc}")
    if total == 0:
        return 0
    if not args.output:
        return _run(lambda args: batch.run(args, sys.stdout, total), args)
    try:
        output = open(args.output, "w", encoding="utf-8")  # noqa: SIM115 - closed just below
    except OSError as exc:
        return _refuse(f"cannot write {args.output}: {exc.strerror or exc}")
    with output:
        return _run(lambda args: batch.run(args, output, total), args)


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
            print(f"raybus: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2))
    return 1 if result.is_error else 0


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def command(name: str, help_text: str, handler: Any) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text)
        parser.add_argument(
            "--address",
            default=None,
            help="Ray cluster address (default: the Ray of a `raybus up` of that bus on "
            "this machine, else auto)",
        )
        parser.set_defaults(run=lambda args: _run(handler, args))
        return parser

    command("start", "launch a detached bus from a YAML config", _start).add_argument("config")
    command("stop", "drain and stop a running bus", _stop).add_argument("bus")
    status = command("status", "show a bus's pools, lag and workers", _status)
    status.add_argument("bus")
    status.add_argument("--json", action="store_true", help="print JSON")
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
