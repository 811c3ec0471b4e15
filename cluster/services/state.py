"""The state file of ``raybus services``: what ``up`` started, so ``down`` can stop it.

One JSON document under the cache directory, written atomically (temp file + rename), and
guarded by an exclusive lock so two ``raybus services`` commands never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cluster.services.errors import ServiceError

__all__ = [
    "ServiceName",
    "ServiceRecord",
    "ServicesState",
    "default_cache_dir",
    "load_state",
    "save_state",
    "state_lock",
    "state_path",
]

CACHE_DIR_ENV = "RAYBUS_CACHE_DIR"
_STATE_FILE = "services.json"
_LOCK_FILE = "services.lock"


class ServiceName(StrEnum):
    """The local services raybus can run."""

    KAFKA = "kafka"
    SQS = "sqs"
    # An OAuth authorization server for the gateway's OAuth tests; `services up` starts
    # it only when named (--only keycloak): the others need it not.
    KEYCLOAK = "keycloak"


class ServiceRecord(BaseModel):
    """One running service: enough to find it, reach it, stop it and clean up after it.

    Attributes:
        name: which service.
        pid: its process id.
        pid_start_ticks: the process start time (see ``process.pid_start_ticks``), so a
            reused pid is never mistaken for the service.
        endpoint: what clients connect to (``host:port`` for Kafka, a URL for SQS).
        env_var: the environment variable that hands ``endpoint`` to tests and tools.
        log_path: the service's log file.
        temp_dir: the scratch directory (data, config, log) removed when it stops.
    """

    model_config = ConfigDict(frozen=True)

    name: ServiceName
    pid: int
    pid_start_ticks: int | None
    endpoint: str
    env_var: str
    log_path: Path
    temp_dir: Path


class ServicesState(BaseModel):
    """Everything ``raybus services up`` started and has not stopped yet."""

    services: dict[ServiceName, ServiceRecord] = Field(default_factory=dict)


def default_cache_dir() -> Path:
    """``$RAYBUS_CACHE_DIR``, else ``$XDG_CACHE_HOME/raybus``, else ``~/.cache/raybus``.

    Read when called (at the CLI or test-session edge), never at import time.
    """
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "raybus"


def state_path(cache_dir: Path) -> Path:
    """Where the state file lives under ``cache_dir``."""
    return cache_dir / _STATE_FILE


def load_state(path: Path) -> ServicesState:
    """Read the state file; a missing file is an empty state.

    Raises:
        ServiceError: the file exists but is not a state document.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ServicesState()
    except OSError as exc:
        raise ServiceError("services", f"cannot read the state file {path}: {exc}") from exc
    try:
        return ServicesState.model_validate_json(text)
    except ValidationError as exc:
        raise ServiceError(
            "services",
            f"the state file {path} is not valid ({exc.error_count()} errors); "
            "stop the processes it names by hand and delete it",
        ) from exc


def save_state(path: Path, state: ServicesState) -> None:
    """Write the state file atomically: readers see the old or the new file, never half.

    Raises:
        ServiceError: the file could not be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as tmp:
                tmp.write(state.model_dump_json(indent=2))
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
    except OSError as exc:
        raise ServiceError("services", f"cannot write the state file {path}: {exc}") from exc


@contextlib.contextmanager
def state_lock(cache_dir: Path) -> Iterator[None]:
    """Hold the exclusive lock on the state file for the duration of a command.

    It does not wait: a second concurrent command fails at once instead of blocking
    behind a broker start-up of unknown length.

    Raises:
        ServiceError: another ``raybus services`` command holds the lock.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    lock_path = cache_dir / _LOCK_FILE
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise ServiceError(
                "services", f"another `raybus services` command is running (lock {lock_path})"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
