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
from cluster.ray_actors.worker import PoolStartFailed
from cluster.telemetry import EXPORTER_VARIABLE, check_exporter

__all__ = ["check_pools", "check_tracing"]


def check_pools(config: BusConfig) -> None:
    """Check that every pool's server can be found.

    Raises:
        PoolStartFailed: the first pool whose module or command cannot be found.
    """
    for pool in config.pools:
        problem = _command_problem(pool) if pool.command else _module_problem(pool)
        if problem is not None:
            raise PoolStartFailed(pool.name, problem)


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


def _module_problem(pool: PoolConfig) -> str | None:
    if any(pool.runtime_env.get(field) for field in _SHIPS_CODE):
        return None  # only the worker can tell; the watched start reports it
    module = (pool.server or "").partition(":")[0] if pool.server else pool.tools or ""
    env_vars = pool.runtime_env.get("env_vars") or {}
    extra = str(env_vars.get("PYTHONPATH", ""))
    with _worker_search_path([p for p in extra.split(os.pathsep) if p]):
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError) as exc:  # a parent package is missing
            return str(exc)
    return None if found is not None else f"No module named {module!r}"


def _command_problem(pool: PoolConfig) -> str | None:
    program = (pool.command or [""])[0]
    path = pool.env.get("PATH", os.environ.get("PATH", os.defpath))
    if shutil.which(program, path=path) is not None:
        return None
    if os.sep in program:
        return f"command {program!r} does not exist or is not executable"
    return f"command {program!r} is not on PATH"


@contextlib.contextmanager
def _worker_search_path(extra: list[str]) -> Iterator[None]:
    # Ray puts the driver's working directory on its local workers' sys.path; a console
    # script's own sys.path lacks it, so look there too, as the workers will, and on the
    # PYTHONPATH the pool's runtime_env gives its workers.
    saved = list(sys.path)
    sys.path[:0] = [*extra, os.getcwd()]
    try:
        yield
    finally:
        sys.path[:] = saved
