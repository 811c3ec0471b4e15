"""Load a pool's server as its workers will, in a child process, bounded in time.

``raybus config check`` answers "will this ``server:`` / ``tools:`` load?" without
starting Ray. Loading runs the module's own code, which may hang, read stdin, print,
exit or change this process's state; so a child process does it, with the workers' own
loader (:func:`~cluster.ray_actors.worker.link_factory_for`) and their search path and
``runtime_env`` variables. Its stdin is closed, whatever the module writes to stdout goes
to stderr (the verdict has a descriptor of its own), and it is killed, together with
anything it started, when it does not finish within the timeout. The verdict is
:func:`~cluster.ray_actors.worker.start_failure_reason`: the words ``raybus up`` uses
when the pool cannot start.

The child: ``python -m cluster.cli.server_probe POOL_JSON`` writes its verdict as one
JSON object to the verdict descriptor (its stdout): ``{"problem": "<one line>"}`` when
the server does not load, else ``{"tools": [...]}``, the server's own tool names when an
``MCPServer`` (and so a module of functions) knows them without starting, or
``{"tools": null}`` (a low-level ``Server`` lists its tools only when it runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cluster.cli.preflight import worker_environment, worker_search_path
from cluster.config import PoolConfig

__all__ = ["Probe", "load_problems", "map_problems", "probe_servers"]

# Each child imports the SDK and Ray's client library (~2 s of CPU): on two shared cores,
# a few at once is as fast as it gets.
_AT_ONCE = 4
_STDERR_TAIL_CHARS = 400


@dataclass(frozen=True)
class Probe:
    """What loading a pool's server told: why it failed, or the tools it lists."""

    problem: str | None = None
    tools: tuple[str, ...] | None = None  # None: not known without running the server


def load_problems(pools: Sequence[PoolConfig], timeout_s: float) -> list[str | None]:
    """For each pool, why its server would not load on a worker, or None if it loads.

    Pools with a ``command:`` or a ``url:`` are not loaded (None): a command is checked
    on PATH, a remote server is reached by the workers only.
    """
    return [probe.problem for probe in probe_servers(pools, timeout_s)]


def probe_servers(pools: Sequence[PoolConfig], timeout_s: float) -> list[Probe]:
    """Load each pool's server as :func:`load_problems` does; also its tool names."""
    with ThreadPoolExecutor(max_workers=_AT_ONCE) as threads:
        return list(threads.map(lambda pool: _probe(pool, timeout_s), pools))


def _probe(pool: PoolConfig, timeout_s: float) -> Probe:
    if pool.command is not None or pool.url is not None:
        return Probe()
    search = [*worker_search_path(pool), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        **worker_environment(pool),
        "PYTHONPATH": os.pathsep.join(p for p in search if p),
    }
    return _run_child(pool.model_dump_json(), env, timeout_s, "the server")


def map_problems(paths: Sequence[str], timeout_s: float) -> list[str | None]:
    """For each trigger ``map:`` path, why it would not import as a callable, or None."""
    with ThreadPoolExecutor(max_workers=_AT_ONCE) as threads:
        probes = threads.map(
            lambda path: _run_child(json.dumps({"map": path}), dict(os.environ), timeout_s, path),
            paths,
        )
        return [probe.problem for probe in probes]


def _run_child(payload: str, env: dict[str, str], timeout_s: float, what: str) -> Probe:
    child = subprocess.Popen(
        [sys.executable, "-m", __name__, payload],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        start_new_session=True,  # its own process group: killed with what it started
    )
    try:
        verdict, errors = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(child.pid)
        child.communicate()
        return Probe(f"loading {what} did not finish within {timeout_s:g} s")
    finally:
        _kill_group(child.pid)  # anything the module started and left running
    said = _verdict(verdict)
    if said is not None and (said.problem is not None or child.returncode == 0):
        return said
    tail = errors.strip()[-_STDERR_TAIL_CHARS:].splitlines()
    last = f": {tail[-1].strip()}" if tail else ""
    return Probe(f"loading {what} ended its process (exit code {child.returncode}){last}")


def _verdict(text: str) -> Probe | None:
    """The child's verdict; None when it wrote none (it was ended before it could)."""
    try:
        wire: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(wire, dict):
        return None
    tools = wire.get("tools")
    problem = wire.get("problem")
    return Probe(
        str(problem) if problem is not None else None,
        tuple(map(str, tools)) if isinstance(tools, list) else None,
    )


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _main(payload: str) -> int:
    verdict = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the module's prints go to stderr
    # Imported after the redirection: nothing from here on writes to the verdict.
    from cluster.ray_actors.worker import load_pool_server, start_failure_reason

    wire = json.loads(payload)
    try:
        if "map" in wire:  # a trigger's map: callable, imported as its trigger actor does
            _import_map(str(wire["map"]))
            tools = None
        else:
            tools = _own_tool_names(load_pool_server(PoolConfig.model_validate(wire)))
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: the module's verdict
        verdict.write(json.dumps({"problem": start_failure_reason(exc)}) + "\n")
        verdict.flush()
        return 1
    verdict.write(json.dumps({"tools": tools}) + "\n")
    verdict.flush()
    return 0


def _import_map(path: str) -> None:
    from cluster.ray_actors.worker import PoolStartFailed
    from cluster.triggers.ports import TriggerStartFailed, import_callable

    try:
        import_callable("-", path)
    except TriggerStartFailed as exc:  # its reason, without the trigger's name
        raise PoolStartFailed("-", exc.reason.removeprefix("map: ")) from None


def _own_tool_names(server: Any) -> list[str] | None:
    """The tools an ``MCPServer`` registered (no lifespan is entered), else None."""
    from mcp.server.mcpserver import MCPServer

    if not isinstance(server, MCPServer):
        return None
    return [tool.name for tool in asyncio.run(server.list_tools())]


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
