"""``raybus services up|down|status``: a local Kafka broker and SQS endpoint for a shell.

``up`` starts them as detached processes (they outlive the command), records them in the
state file under the cache directory and prints one ``NAME=value`` line per endpoint on
stdout, so ``eval "$(raybus services up --export)"`` hands them to tests and tools.
Progress and errors go to stderr. ``down`` stops what ``up`` started and removes its
scratch directories; ``status`` says what runs and whether it answers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import shutil
import sys
from pathlib import Path

from cluster.cli.failures import report
from cluster.services.base import LocalService
from cluster.services.errors import ServiceError
from cluster.services.process import is_running, stop_process
from cluster.services.state import (
    ServiceName,
    ServiceRecord,
    ServicesState,
    default_cache_dir,
    load_state,
    save_state,
    state_lock,
    state_path,
)

__all__ = ["add_parser"]

_STATUS_PROBE_TIMEOUT_S = 10.0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``services`` and its ``up``, ``down`` and ``status`` actions."""
    parser = subparsers.add_parser(
        "services",
        help="run a local Apache Kafka broker and SQS endpoint (moto) on 127.0.0.1 "
        "(and Keycloak, with --only keycloak)",
    )
    actions = parser.add_subparsers(dest="services_action", required=True, metavar="ACTION")
    only = {
        "type": ServiceName,
        "choices": list(ServiceName),
        "help": "act on this service only (default: all)",
    }

    up = actions.add_parser("up", help="start the services in the background")
    up.add_argument("--only", **only)  # type: ignore[arg-type]
    up.add_argument(
        "--export", action="store_true", help="print `export NAME=value` lines for eval"
    )
    up.add_argument(
        "--ready-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for each service to answer (default: %(default)s)",
    )
    up.set_defaults(run=_run_up)

    down = actions.add_parser("down", help="stop what `up` started and remove its temp dirs")
    down.add_argument("--only", **only)  # type: ignore[arg-type]
    down.set_defaults(run=_run_down)

    status = actions.add_parser("status", help="show what runs and whether it answers")
    status.set_defaults(run=_run_status)


def _selected(args: argparse.Namespace, *, starting: bool = False) -> list[ServiceName]:
    only: ServiceName | None = args.only
    if only is not None:
        return [only]
    # Keycloak is started only when named; stopped and shown like the others.
    return [n for n in ServiceName if not (starting and n is ServiceName.KEYCLOAK)]


def _service_type(name: ServiceName) -> type[LocalService]:
    # Imported here so other raybus commands never load aiokafka and aioboto3.
    if name is ServiceName.KAFKA:
        from cluster.services.kafka import KafkaService

        return KafkaService
    if name is ServiceName.KEYCLOAK:
        from cluster.services.keycloak import KeycloakService

        return KeycloakService
    from cluster.services.sqs import SqsService

    return SqsService


def _new_service(name: ServiceName, cache_dir: Path, ready_timeout_s: float) -> LocalService:
    if name is ServiceName.KAFKA:
        from cluster.services.kafka import KafkaService
        from cluster.services.kafka_dist import cached_distribution, kafka_coordinates

        if cached_distribution(cache_dir) is None:
            print(
                f"fetching {kafka_coordinates()} from Maven Central into {cache_dir} (once)",
                file=sys.stderr,
            )
        return KafkaService(cache_dir, ready_timeout_s=ready_timeout_s)
    if name is ServiceName.KEYCLOAK:
        from cluster.services.keycloak import KeycloakService

        return KeycloakService(cache_dir, ready_timeout_s=max(ready_timeout_s, 300.0))
    from cluster.services.sqs import SqsService

    return SqsService(ready_timeout_s=ready_timeout_s)


def _env_line(record: ServiceRecord, export: bool) -> str:
    line = f"{record.env_var}={shlex.quote(record.endpoint)}"
    return f"export {line}" if export else line


async def _up(args: argparse.Namespace, cache_dir: Path) -> int:
    path = state_path(cache_dir)
    records = dict(load_state(path).services)
    services: list[LocalService] = []
    for name in _selected(args, starting=True):
        record = records.get(name)
        if record is not None and is_running(record.pid, record.pid_start_ticks):
            print(f"{name} already running (pid {record.pid})", file=sys.stderr)
            continue
        if record is not None:  # died since `up`: forget it and its leftovers
            shutil.rmtree(record.temp_dir, ignore_errors=True)
            del records[name]
        services.append(_new_service(name, cache_dir, args.ready_timeout))
    for service in services:
        print(f"starting {service.name} ...", file=sys.stderr)
    results = await asyncio.gather(*(s.start() for s in services), return_exceptions=True)
    failed = False
    for service, result in zip(services, results, strict=True):
        if isinstance(result, ServiceError):
            report(result, context="services up")
            failed = True
        elif isinstance(result, BaseException):
            raise result
        else:
            records[service.name] = service.record()
            print(
                f"{service.name} ready in {service.ready_after_s or 0.0:.1f} s "
                f"(pid {service.pid}, log {service.log_path})",
                file=sys.stderr,
            )
    save_state(path, ServicesState(services=records))
    for name in _selected(args, starting=True):
        if name in records:
            print(_env_line(records[name], args.export))
    return 1 if failed else 0


async def _down(args: argparse.Namespace, cache_dir: Path) -> int:
    path = state_path(cache_dir)
    records = dict(load_state(path).services)
    failed = False
    for name in _selected(args):
        record = records.get(name)
        if record is None:
            continue
        try:
            stopped = await stop_process(record.pid, record.pid_start_ticks)
        except ServiceError as exc:
            report(exc, context=f"services down: {name}")
            failed = True
            continue
        shutil.rmtree(record.temp_dir, ignore_errors=True)
        del records[name]
        print(f"{name} {'stopped' if stopped else 'was not running'} (pid {record.pid})")
    save_state(path, ServicesState(services=records))
    return 1 if failed else 0


async def _status(cache_dir: Path) -> int:
    records = load_state(state_path(cache_dir)).services
    if not records:
        print("no services started by `raybus services up`")
        return 0
    healthy = True
    for name, record in sorted(records.items()):
        running = is_running(record.pid, record.pid_start_ticks)
        answers = running and await _service_type(name).probe(
            record.endpoint, timeout_s=_STATUS_PROBE_TIMEOUT_S
        )
        healthy = healthy and answers
        state = "answers" if answers else ("running, not answering" if running else "not running")
        print(f"{name:<6} {state:<24} {_env_line(record, export=False)}")
        print(f"       pid {record.pid}, log {record.log_path}")
    return 0 if healthy else 1


def _quiet_client_logs(args: argparse.Namespace) -> None:
    # Readiness polling makes aiokafka log expected, transient failures at ERROR (refused
    # connections, the group coordinator not elected yet); a failure that matters reaches
    # the user as a ServiceError. `raybus -v` keeps them.
    if not getattr(args, "verbose", 0):
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def _run_up(args: argparse.Namespace) -> int:
    _quiet_client_logs(args)
    cache_dir = default_cache_dir()
    try:
        with state_lock(cache_dir):
            return asyncio.run(_up(args, cache_dir))
    except ServiceError as exc:
        return report(exc, 1, context="services up")


def _run_down(args: argparse.Namespace) -> int:
    cache_dir = default_cache_dir()
    try:
        with state_lock(cache_dir):
            return asyncio.run(_down(args, cache_dir))
    except ServiceError as exc:
        return report(exc, 1, context="services down")


def _run_status(args: argparse.Namespace) -> int:
    _quiet_client_logs(args)
    try:
        return asyncio.run(_status(default_cache_dir()))
    except ServiceError as exc:
        return report(exc, 1, context="services status")
