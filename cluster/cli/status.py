"""``raybus status [BUS] [--json] [--watch [S]]``: which buses run, and how they are doing.

Without a name: one row per bus on every cluster this machine can see (``auto`` and the
Ray of each ``raybus up``, or ``--address``; see :mod:`cluster.cli.clusters`): backend,
pools, routed workers, queued calls and the oldest one's age, calls in flight, breakers
that are not closed, and gateway URLs. No bus running is an answer, not an error (exit 0).
With a name: that bus in detail (each pool's lag and breaker, each worker, the recent
autoscaling decisions); a name that runs nowhere exits 1 naming the buses that do run.

``--json`` prints one JSON object instead: the bus, or ``{"buses": [...]}``.
``--watch [S]`` prints it again every S seconds (default 2) until Ctrl-C, which exits 0:
in place on a terminal; otherwise one snapshot per interval, each led by a time-stamped
line and free of terminal control codes (with ``--json``, one JSON object per line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ray.exceptions import RayError

from actors.capacity import format_amounts
from cluster.bus import bus_endpoints, bus_status, running_buses
from cluster.cli.clusters import (
    Joiner,
    add_address_argument,
    address_for,
    candidate_addresses,
)
from cluster.cli.failures import fail, one_line
from cluster.cli.local_buses import local_buses
from transports.errors import BusError, ConnectionClosed

__all__ = ["add_parser", "format_buses", "format_status", "summary"]

_WATCH_DEFAULT_S = 2.0
_WATCH_MIN_S = 0.5  # each refresh asks every bus's actors: not a busy loop
_WATCH_MAX_S = 3600.0
_CLEAR_SCREEN = "\x1b[H\x1b[2J"  # cursor home, erase the display

Snapshot = tuple[str, Any]  # (text for people, JSON for programs)


def format_status(status: dict[str, Any]) -> str:
    """One bus's status as aligned text: pools, workers, recent autoscaling decisions."""
    heading = f"bus {status['bus']}"
    if status.get("backend"):
        heading += f" ({status['backend']} backend)"
    lines = [heading]
    if "gateways" in status:
        gateways = ", ".join(status["gateways"]) or "none (`raybus up` serves one)"
        lines.append(f"gateway {gateways}")
    pool_row = "{:<14}{:>8}{:>8}{:>10}{:>10}  {}"
    lines += ["", pool_row.format("pool", "workers", "queued", "oldest s", "in flight", "breaker")]
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
    for clash in status.get("collisions") or []:
        lines.append(
            f"  collision: {clash['kind']} {clash['name']!r} is offered by pools "
            f"{clash['owner']} and {clash['other']}; {clash['owner']} keeps it"
        )
    lines += _trigger_lines(status.get("triggers") or {})
    held = [f"{count} {status_}" for status_, count in (status.get("tasks") or {}).items() if count]
    if held:
        lines.append(f"tasks: {', '.join(held)}")
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


def _trigger_lines(triggers: dict[str, dict[str, Any]]) -> list[str]:
    """The triggers table: lag (records not yet committed), rate over the last 10 s."""
    if not triggers:
        return []
    table = [["trigger", "source", "tool", "lag", "rate/s", "in flight", "dlq", "state"]]
    for name, t in sorted(triggers.items()):
        lag = "?" if t.get("lag") is None else str(t["lag"])
        in_flight = f"{t.get('in_flight', 0)}/{t.get('max_in_flight', 0)}"
        table.append([name, t["source"], t["tool"], lag, f"{t.get('rate_per_s', 0.0):.1f}"])
        table[-1] += [in_flight, str(t.get("dead_lettered", 0)), t["state"]]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = [""]
    for line in table:  # names left, numbers right, two spaces apart
        cells = [
            c.ljust(w) if i < 3 or i == 7 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    for name, t in sorted(triggers.items()):
        if t.get("lag_error"):
            lines.append(f"  {name}: lag not read: {t['lag_error']}")
        if t.get("last_error"):
            lines.append(f"  {name}: last error: {t['last_error']}")
    return lines


def _placement_line(row: dict[str, Any]) -> str:
    parts = []
    if row.get("labels"):
        parts.append(f"labels {', '.join(f'{k}={v}' for k, v in row['labels'].items())}")
    if row.get("resources"):
        parts.append(f"each worker reserves {format_amounts(row['resources'])}")
    if row.get("label_selector"):
        labels = ", ".join(f"{k}={v}" for k, v in row["label_selector"].items())
        parts.append(f"on nodes with {labels}")
    if row.get("env"):
        parts.append(f"env {', '.join(row['env'])} (values hidden)")
    return "; ".join(parts)


def summary(status: dict[str, Any], ray_address: str) -> dict[str, Any]:
    """One bus's row of the list: totals over its pools."""
    pools = status["pools"].values()
    return {
        "bus": status["bus"],
        "ray_address": ray_address,
        "backend": status.get("backend"),
        "pools": len(status["pools"]),
        "workers": sum(p["workers"] for p in pools),
        "queued": sum(p["queued"] for p in pools),
        "oldest_age_s": max((p["oldest_age_s"] for p in pools), default=0.0),
        "in_flight": sum(p["in_flight"] for p in pools),
        "breakers": {name: p["breaker"] for name, p in sorted(status["pools"].items())},
        "gateways": status.get("gateways", []),
    }


def format_buses(rows: Sequence[dict[str, Any]]) -> str:
    """The list of buses as an aligned table (a ``ray`` column when they span clusters)."""
    if not rows:
        return "no bus is running"
    several_rays = len({row["ray_address"] for row in rows}) > 1
    headers = ["bus", "backend", "pools", "workers", "queued", "oldest s", "in flight"]
    headers += ["breaker", *(["ray"] if several_rays else []), "gateway"]
    table = [headers]
    for row in sorted(rows, key=lambda r: (r["bus"], r["ray_address"])):
        breakers = row["breakers"].items()
        tripped = ",".join(f"{pool}:{state}" for pool, state in breakers if state != "closed")
        cells = [row["bus"], row["backend"] or "?", row["pools"], row["workers"], row["queued"]]
        cells += [f"{row['oldest_age_s']:.2f}", row["in_flight"], tripped or "closed"]
        cells += [row["ray_address"]] if several_rays else []
        cells.append(", ".join(row["gateways"]) or "-")
        table.append([str(cell) for cell in cells])
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    numeric = {"pools", "workers", "queued", "oldest s", "in flight"}
    return "\n".join(
        "  ".join(
            cell.rjust(width) if header in numeric else cell.ljust(width)
            for cell, width, header in zip(line, widths, headers, strict=True)
        ).rstrip()
        for line in table
    )


async def _status_or_none(bus: str) -> dict[str, Any] | None:
    try:
        status, endpoints = await asyncio.gather(bus_status(bus), bus_endpoints(bus))
    except ConnectionClosed:
        return None  # not running (or stopped while it was asked)
    return {"bus": status["bus"], **endpoints, **status}


def _not_running(bus: str, on_cluster: Sequence[str]) -> str:
    running = sorted({*on_cluster, *local_buses()} - {bus})
    if not running:
        return f"no bus named {bus!r} is running, and no other bus is"
    return f"no bus named {bus!r} is running; running: {', '.join(running)}"


def _named(args: argparse.Namespace, joiner: Joiner) -> int:
    bus: str = args.bus
    address = address_for(bus, args.address)
    try:
        joiner.join(address)
    except ConnectionError as exc:
        if args.address:
            return fail(f"cannot join the Ray cluster at {address!r}: {exc}", 2)
        return fail(_not_running(bus, []), 1)  # no cluster here: no bus either
    status = asyncio.run(_status_or_none(bus))
    if status is None:
        return fail(_not_running(bus, asyncio.run(running_buses())), 1)

    def snapshot() -> Snapshot:
        now = asyncio.run(_status_or_none(bus))
        if now is None:
            return f"bus {bus!r} is not running", {"bus": bus, "running": False}
        return format_status(now), now

    first = (format_status(status), status)
    return _show(args, first, snapshot)


def _listed(args: argparse.Namespace, joiner: Joiner) -> int:
    def snapshot() -> Snapshot:
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        for address in candidate_addresses(args.address):
            try:
                ray_address = joiner.join(address)
            except ConnectionError:
                if args.address:
                    raise
                continue  # no cluster there: no bus there
            if ray_address not in seen:
                seen.add(ray_address)
                rows += asyncio.run(_summaries(ray_address))
        return format_buses(rows), {"buses": rows}

    try:
        first = snapshot()
    except ConnectionError as exc:
        return fail(f"cannot join the Ray cluster at {args.address!r}: {exc}", 2)
    return _show(args, first, snapshot)


async def _summaries(ray_address: str) -> list[dict[str, Any]]:
    statuses = await asyncio.gather(*map(_status_or_none, await running_buses()))
    return [summary(status, ray_address) for status in statuses if status is not None]


def _show(args: argparse.Namespace, first: Snapshot, snapshot: Callable[[], Snapshot]) -> int:
    if args.watch is None:
        text, data = first
        print(json.dumps(data, indent=2) if args.json else text)
        return 0
    return _watch(args, first, snapshot)


def _watch(args: argparse.Namespace, first: Snapshot, snapshot: Callable[[], Snapshot]) -> int:
    interval_s: float = args.watch
    terminal = sys.stdout.isatty()
    period = threading.Event()  # never set: waiting on it is the refresh period
    current, taken = first, time.monotonic()
    try:
        while True:
            text, data = current
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            if args.json:
                frame = json.dumps(data) + "\n"
            else:
                heading = f"raybus status at {stamp}, every {interval_s:g} s (Ctrl-C stops)"
                frame = f"{heading}\n\n{text}\n" + ("" if terminal else "\n")
            sys.stdout.write((_CLEAR_SCREEN if terminal and not args.json else "") + frame)
            sys.stdout.flush()
            period.wait(max(0.0, interval_s - (time.monotonic() - taken)))
            taken = time.monotonic()  # refreshes start one interval apart
            current = _next(snapshot)
    except KeyboardInterrupt:
        return 0


def _next(snapshot: Callable[[], Snapshot]) -> Snapshot:
    """The next snapshot; a failure to read one is shown, and the watch goes on."""
    try:
        return snapshot()
    except (BusError, RayError, ConnectionError) as exc:
        reason = one_line(exc)
        return f"could not read the status: {reason}", {"error": reason}


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds, got {text!r} (a bus name goes before --watch)"
        ) from None
    if not _WATCH_MIN_S <= value <= _WATCH_MAX_S:
        raise argparse.ArgumentTypeError(
            f"must be seconds between {_WATCH_MIN_S:g} and {_WATCH_MAX_S:g}, got {text}"
        )
    return value


def _run(args: argparse.Namespace) -> int:
    joiner = Joiner()
    try:
        return _named(args, joiner) if args.bus else _listed(args, joiner)
    finally:
        joiner.leave()


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status",
        help="list the running buses, or show one's pools, lag and workers",
        description="Without BUS: every bus this machine can see, one row each. With BUS: "
        "that bus's pools, workers and recent autoscaling decisions.",
    )
    parser.add_argument("bus", nargs="?", help="the bus to show (default: list them all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--watch",
        nargs="?",
        type=_interval,
        const=_WATCH_DEFAULT_S,
        default=None,
        metavar="S",
        help=f"refresh every S seconds (default {_WATCH_DEFAULT_S:g}) until Ctrl-C",
    )
    add_address_argument(parser)
    parser.set_defaults(run=_run)
