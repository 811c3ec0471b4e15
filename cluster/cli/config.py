"""``raybus config check FILE``: would this bus start? Answered without starting anything.

Every problem is one line led by where it is in the file, and the exit code is 1::

    pools[1].min_workers: Input should be greater than or equal to 0
    pools[0].server: pool 'kit' failed to start: No module named 'cluster.examples.testkitt'
    pools[2].command: pool 'calc' failed to start: command 'calcd' is not on PATH

or one line ``ok: bus 'demo', 3 pools`` and exit 0. Checked, in order: the file reads and
parses as YAML; it validates (every bad field, not only the first); each pool's
``server:`` or ``tools:`` loads as its workers load it (in a child process, bounded by
``--timeout``: see :mod:`cluster.cli.server_probe`), in the words ``raybus up`` uses when
a pool cannot start; each ``command:`` names an executable on the pool's PATH; no two
pools whose tool names are known without starting them (``tools:`` modules, ``MCPServer``
objects) offer the same tool after their namespaces and filters; and the gateway is one
``raybus up`` would serve; each trigger's ``map:`` imports as a callable (in a child
process too) and its ``tool:`` is offered by some pool (when every pool's tools are
known). Neither Ray nor any service is started, and no module of the config is imported
into this process.

A pool whose ``runtime_env`` ships its code (``pip``, ``py_modules``, ...) is not loaded
here - only its workers can tell - and the output says so.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from actors.router.regions import placement_notes
from cluster.cli.preflight import command_problem, gateway_problem, ships_code
from cluster.config import (
    BusConfig,
    ConfigError,
    PoolConfig,
    field_path,
    parse_config,
    read_config_data,
)
from cluster.namespaces import static_collisions
from cluster.ray_actors.worker import PoolStartFailed
from cluster.triggers.check import trigger_problems

__all__ = ["ConfigCheck", "add_parser", "check_config"]

_DEFAULT_TIMEOUT_S = 60.0  # a cold import of a heavy server (torch, ...) on a loaded machine


@dataclass
class ConfigCheck:
    """What ``raybus config check`` found: the config (if it validated), problems, notes."""

    config: BusConfig | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_config(path: str | Path, *, load_timeout_s: float = _DEFAULT_TIMEOUT_S) -> ConfigCheck:
    """Check a bus configuration file without starting Ray (see the module docstring)."""
    try:
        data = read_config_data(path)
    except ConfigError as exc:
        return ConfigCheck(problems=[f"{path}: {problem}" for problem in exc.problems])
    found = ConfigCheck()
    try:
        found.config = parse_config(data, str(path))
        pools = dict(enumerate(found.config.pools))
    except ConfigError as exc:
        found.problems += exc.problems
        pools = _valid_pools(data)  # a bad field elsewhere does not hide a bad server
    own_tools = _check_servers(pools, found, load_timeout_s)
    if found.config is not None:
        index_of = {pool.name: index for index, pool in enumerate(found.config.pools)}
        for pool, clash in static_collisions(found.config, own_tools):
            found.problems.append(f"{field_path(('pools', index_of[pool]))}: {clash}")
        found.notes += placement_notes(found.config.router.regions, found.config.pools)
        found.problems += trigger_problems(found.config, own_tools, _map_problems, load_timeout_s)
        refused = gateway_problem(found.config)
        if refused is not None:
            host = found.config.gateway.host
            found.problems.append(f"gateway.host: raybus up would refuse to bind {host}: {refused}")
    return found


def _valid_pools(data: Any) -> dict[int, PoolConfig]:
    """The pools of an invalid file that are valid by themselves, by their index."""
    raw = data.get("pools") if isinstance(data, dict) else None
    valid = {}
    for index, pool in enumerate(raw if isinstance(raw, list) else []):
        with contextlib.suppress(ValidationError):
            valid[index] = PoolConfig.model_validate(pool)
    return valid


def _check_servers(
    pools: dict[int, PoolConfig], found: ConfigCheck, timeout_s: float
) -> dict[str, tuple[str, ...]]:
    """Load the pools' servers; returns their own tool names, where known, by pool name."""
    # Imported here: `python -m cluster.cli.server_probe` (the child) imports this package.
    from cluster.cli.server_probe import probe_servers

    loadable = {
        i: p for i, p in pools.items() if p.command is None and p.url is None and not ships_code(p)
    }
    probes = dict(zip(loadable, probe_servers(list(loadable.values()), timeout_s), strict=True))
    for index, pool in pools.items():
        if pool.url is not None:
            continue  # reached by its workers only: `raybus up` names it if it is down
        where = field_path(("pools", index, "command" if pool.command else _source(pool)))
        shipper = ships_code(pool)
        if pool.command is not None:
            problem = command_problem(pool)
        elif shipper is not None:
            found.notes.append(
                f"{where}: not loaded here: runtime_env.{shipper} brings its code to the workers"
            )
            continue
        else:
            problem = probes[index].problem
        if problem is not None:
            found.problems.append(f"{where}: {PoolStartFailed(pool.name, problem)}")
    return {
        pools[index].name: tools
        for index, probe in probes.items()
        if (tools := probe.tools) is not None
    }


def _map_problems(paths: Sequence[str], timeout_s: float) -> list[str | None]:
    from cluster.cli.server_probe import map_problems  # lazily: see _check_servers

    return map_problems(paths, timeout_s)


def _source(pool: PoolConfig) -> str:
    return "server" if pool.server else "tools"


def _run(args: argparse.Namespace) -> int:
    found = check_config(args.file, load_timeout_s=args.timeout)
    for line in [*found.problems, *(f"note: {note}" for note in found.notes)]:
        print(line)
    if found.problems or found.config is None:
        return 1
    pools = len(found.config.pools)
    print(f"ok: bus {found.config.name!r}, {pools} pool{'s' if pools != 1 else ''}")
    return 0


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be seconds in (0, 3600], got {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("config", help="check a bus configuration")
    verbs = parser.add_subparsers(dest="config_command", required=True, metavar="VERB")
    check = verbs.add_parser(
        "check",
        help="validate a bus YAML and load its servers, without starting Ray",
        description="Print every problem as 'field.path: reason' (exit 1), or 'ok' (exit 0).",
    )
    check.add_argument("file", help="bus YAML")
    check.add_argument(
        "--timeout",
        type=_seconds,
        default=_DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds to let each server load (default {_DEFAULT_TIMEOUT_S:g})",
    )
    check.set_defaults(run=_run)
