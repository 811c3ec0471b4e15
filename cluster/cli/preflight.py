"""Checks of a bus configuration that need no Ray: run before anything is started.

A misspelled ``server:`` import path or a ``command:`` that is not on ``PATH`` is known
to this process in milliseconds; discovering it through a worker costs Ray's start-up
first. These checks hold for a Ray this process starts (its workers share this
machine, interpreter and environment); on a cluster joined by address the workers may
see another environment, so there the start-up's watch of its workers reports instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator

from cluster.config import BusConfig, PoolConfig
from cluster.gateway.listener import LOOPBACK_HOSTS
from cluster.ray_actors.worker import PoolStartFailed, server_command
from cluster.telemetry import EXPORTER_VARIABLE, check_exporter

__all__ = [
    "check_pools",
    "check_tracing",
    "command_problem",
    "gateway_problem",
    "ships_code",
    "worker_environment",
    "worker_search_path",
]


def check_pools(config: BusConfig) -> None:
    """Check that every pool's server can be found.

    Raises:
        PoolStartFailed: the first pool whose module or command cannot be found.
    """
    for pool in config.pools:
        if pool.url is not None:
            continue  # a remote server: its workers name the URL if it cannot be reached
        problem = command_problem(pool) if pool.command else _module_problem(pool)
        if problem is not None:
            raise PoolStartFailed(pool.name, problem)


def gateway_problem(config: BusConfig) -> str | None:
    """Why ``raybus up`` refuses to bind ``gateway.host`` over HTTP, if it does."""
    settings = config.gateway
    authenticated = bool(settings.policy.tokens) or settings.policy.oauth is not None
    if settings.host not in LOOPBACK_HOSTS and not authenticated:
        # An unauthenticated gateway is never exposed beyond this machine.
        return "only loopback is allowed without authentication"
    return None


def check_tracing(config: BusConfig) -> None:
    """Check ``RAYBUS_OTEL_EXPORTER`` here and in each pool's ``runtime_env``: the value,
    and that the OpenTelemetry packages it needs are installed.

    Raises:
        TracingSetupError: the first value that cannot work, naming what is missing.
    """
    values = [os.environ.get(EXPORTER_VARIABLE, "")]
    for pool in config.pools:
        env_vars = pool.runtime_env.get("env_vars") or {}
        values.append(str(env_vars.get(EXPORTER_VARIABLE, "")))
    for value in values:
        if value.strip():
            check_exporter(value.strip(), packages=True)


# runtime_env fields with which Ray brings code to the worker that this process cannot see.
_SHIPS_CODE = ("py_modules", "working_dir", "pip", "uv", "conda", "container", "image_uri")


def ships_code(pool: PoolConfig) -> str | None:
    """The ``runtime_env`` field that brings the pool's code to its workers, if one does:
    then only a worker can tell whether its server imports."""
    return next((field for field in _SHIPS_CODE if pool.runtime_env.get(field)), None)


def worker_environment(pool: PoolConfig) -> dict[str, str]:
    """The environment variables the pool's ``runtime_env`` gives its workers."""
    env_vars = pool.runtime_env.get("env_vars") or {}
    return {str(key): str(value) for key, value in env_vars.items()}


def worker_search_path(pool: PoolConfig) -> list[str]:
    """Where the pool's workers look for modules before their own ``sys.path``.

    Ray puts the driver's working directory on its local workers' sys.path (a console
    script's own sys.path lacks it), and the pool's runtime_env may set a PYTHONPATH.
    """
    extra = worker_environment(pool).get("PYTHONPATH", "")
    return [*(p for p in extra.split(os.pathsep) if p), os.getcwd()]


def _module_problem(pool: PoolConfig) -> str | None:
    if ships_code(pool):
        return None  # only the worker can tell; the watched start reports it
    module = (pool.server or "").partition(":")[0] if pool.server else pool.tools or ""
    with _searching(worker_search_path(pool)):
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError) as exc:  # a parent package is missing
            return str(exc)
    return None if found is not None else f"No module named {module!r}"


def command_problem(pool: PoolConfig) -> str | None:
    """Why the pool's ``command`` cannot be run (not on its PATH, not executable), if so."""
    program = server_command(list(pool.command or [""]))[0]
    path = pool.env.get("PATH", os.environ.get("PATH", os.defpath))
    if shutil.which(program, path=path) is not None:
        return None
    if os.sep in program:
        return f"command {program!r} does not exist or is not executable"
    return f"command {program!r} is not on PATH"


@contextlib.contextmanager
def _searching(extra: list[str]) -> Iterator[None]:
    saved = list(sys.path)
    sys.path[:0] = extra
    try:
        yield
    finally:
        sys.path[:] = saved
