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

The child: ``python -m cluster.cli.server_probe POOL_JSON`` exits 0 when the server
loads, else writes the one-line reason to the verdict descriptor (its stdout).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from cluster.cli.preflight import worker_environment, worker_search_path
from cluster.config import PoolConfig

__all__ = ["load_problems"]

# Each child imports the SDK and Ray's client library (~2 s of CPU): on two shared cores,
# a few at once is as fast as it gets.
_AT_ONCE = 4
_STDERR_TAIL_CHARS = 400


def load_problems(pools: Sequence[PoolConfig], timeout_s: float) -> list[str | None]:
    """For each pool, why its server would not load on a worker, or None if it loads.

    Pools with a ``command:`` or a ``url:`` are not loaded (None): a command is checked
    on PATH, a remote server is reached by the workers only.
    """
    with ThreadPoolExecutor(max_workers=_AT_ONCE) as threads:
        return list(threads.map(lambda pool: _load_problem(pool, timeout_s), pools))


def _load_problem(pool: PoolConfig, timeout_s: float) -> str | None:
    if pool.command is not None or pool.url is not None:
        return None
    search = [*worker_search_path(pool), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        **worker_environment(pool),
        "PYTHONPATH": os.pathsep.join(p for p in search if p),
    }
    child = subprocess.Popen(
        [sys.executable, "-m", __name__, pool.model_dump_json()],
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
        return f"loading the server did not finish within {timeout_s:g} s"
    finally:
        _kill_group(child.pid)  # anything the module started and left running
    if verdict.strip():
        return verdict.strip()
    if child.returncode != 0:
        tail = errors.strip()[-_STDERR_TAIL_CHARS:].splitlines()
        said = f": {tail[-1].strip()}" if tail else ""
        return f"loading the server ended its process (exit code {child.returncode}){said}"
    return None


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _main(pool_json: str) -> int:
    verdict = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the module's prints go to stderr
    # Imported after the redirection: nothing from here on writes to the verdict.
    from cluster.ray_actors.worker import link_factory_for, start_failure_reason

    pool = PoolConfig.model_validate_json(pool_json)
    try:
        link_factory_for(pool)()
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: the module's verdict
        verdict.write(start_failure_reason(exc) + "\n")
        verdict.flush()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
