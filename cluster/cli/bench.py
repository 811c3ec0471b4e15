"""``raybus bench``: raybus side by side with its anchors, one table of ratios.

Runs the workloads of ``benchmarks/`` (B1-B11, see ``benchmarks/runner.py``) on a
local Ray it starts, prints a table (or, with ``--json``, one JSON object on stdout)
and exits 0 whether or not the goals were met: a benchmark reports, it does not judge.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse

from cluster.cli.failures import fail

__all__ = ["add_parser"]


def _ids(text: str) -> frozenset[str]:
    return frozenset(part.strip().upper() for part in text.split(",") if part.strip())


def _run(args: argparse.Namespace) -> int:
    # Imported here: the other commands should not pay for the benchmarks' imports.
    from benchmarks.runner import BenchOptions, run_bench

    try:
        options = BenchOptions(only=args.only, duration_s=args.duration_s, rounds=args.rounds)
    except ValueError as exc:
        return fail(f"bench: {exc}", 2)
    report = run_bench(options)
    print(report.to_json() if args.json else report.to_table(), flush=True)
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from benchmarks.measure import DEFAULT_DURATION_S, DEFAULT_ROUNDS

    parser = subparsers.add_parser(
        "bench",
        help="measure raybus beside the SDK serving the same server (B1-B11), print ratios",
        description="Run every workload (or --only some) in this process tree and print "
        "a table of raybus / anchor ratios with p50/p99 latencies.",
    )
    parser.add_argument(
        "--only",
        type=_ids,
        default=frozenset(),
        metavar="B1,B4",
        help="comma-separated workload ids (default: all)",
    )
    parser.add_argument(
        "--duration-s",
        type=float,
        default=DEFAULT_DURATION_S,
        metavar="S",
        help=f"seconds per side per round (default {DEFAULT_DURATION_S:g}); bursts shrink "
        "with it below the default",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_ROUNDS,
        metavar="N",
        help=f"interleaved rounds per side (default {DEFAULT_ROUNDS})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.set_defaults(run=_run)
