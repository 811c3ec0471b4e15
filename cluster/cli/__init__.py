"""The ``raybus`` command line.

Each subcommand lives in its own module and registers itself here through an
``add_parser(subparsers)`` function, so this file stays a table of contents.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cluster.cli import bench, demo, up
from cluster.cli import bus as bus_cli
from cluster.cli import services as services_cli

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raybus", description="An actor-model message bus for MCP built on Ray."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.add_parser(subparsers)
    services_cli.add_parser(subparsers)
    bus_cli.add_parsers(subparsers)
    up.add_parser(subparsers)
    bench.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    exit_code: int = args.run(args)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
