"""The ``raybus`` command line.

Each subcommand lives in its own module and registers itself here through an
``add_parser(subparsers)`` function, so this file stays a table of contents - and the
one place that decides how a command fails (see :mod:`cluster.cli.failures`): one line
``raybus: ...`` on stderr, or with ``--debug`` the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cluster.cli import bench, demo, status, up
from cluster.cli import bus as bus_cli
from cluster.cli import config as config_cli
from cluster.cli import keys as keys_cli
from cluster.cli import services as services_cli
from cluster.cli.failures import INTERRUPTED, fail, report, set_debug

__all__ = ["main"]

_DEBUG_HELP = "show the traceback of a failure instead of one line"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raybus", description="An actor-model message bus for MCP built on Ray."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo.add_parser(subparsers)
    services_cli.add_parser(subparsers)
    bus_cli.add_parsers(subparsers)
    status.add_parser(subparsers)
    up.add_parser(subparsers)
    config_cli.add_parser(subparsers)
    keys_cli.add_parser(subparsers)
    bench.add_parser(subparsers)
    _accept_debug_anywhere(parser)
    return parser


def _accept_debug_anywhere(parser: argparse.ArgumentParser) -> None:
    # `raybus status demo --debug` reads as naturally as `raybus --debug status demo`.
    # SUPPRESS: a subcommand without the flag leaves the global one's value alone.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.add_argument(
                    "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
                )
                _accept_debug_anywhere(command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    set_debug(args.debug)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        exit_code: int = args.run(args)
    except KeyboardInterrupt:
        return fail("interrupted", INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - the command's edge: one line, not a traceback
        return report(exc, 1)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
