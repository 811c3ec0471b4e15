"""Buses that ``raybus up`` runs on this machine, each on a Ray of its own.

``raybus up`` without ``--address`` starts a private local Ray, which Ray itself does not
record anywhere ``address="auto"`` looks: two such buses with one name would run on two
Rays, and ``raybus status NAME`` would reach either. So ``up`` claims the bus name here
for as long as it runs - an exclusive ``flock`` the kernel releases when the process
ends, however it ends, so a crash leaves no stale claim - and records its Ray's address
beside it, where ``raybus status | call | stop NAME`` look first.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from cluster.services.state import default_cache_dir
from transports.errors import BusError

__all__ = [
    "BusNameTaken",
    "claim_bus_name",
    "local_bus_address",
    "local_bus_auth_mode",
    "local_buses",
    "record_bus_address",
]

_DIR = "buses"


class BusNameTaken(BusError):
    """Another ``raybus up`` on this machine already runs a bus of that name."""

    def __init__(self, bus: str, pid: int | None, address: str | None) -> None:
        super().__init__(bus, pid, address)
        self.bus = bus
        self.pid = pid
        self.address = address

    def __str__(self) -> str:
        where = f" (pid {self.pid}, Ray at {self.address})" if self.pid else ""
        return (
            f"a bus named {self.bus!r} is already running on this machine{where}: "
            "stop it or choose another name"
        )


def _paths(bus: str, cache_dir: Path | None) -> tuple[Path, Path]:
    base = (cache_dir or default_cache_dir()) / _DIR
    return base / f"{bus}.lock", base / f"{bus}.json"


def _record(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _held(lock_path: Path) -> bool:
    """Does some process hold the claim? (Taking it for an instant tells.)"""
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we may have taken
    return False


@contextlib.contextmanager
def claim_bus_name(bus: str, *, cache_dir: Path | None = None) -> Iterator[None]:
    """Hold the bus name on this machine until the block ends (or the process does).

    Raises:
        BusNameTaken: another live process holds it.
    """
    lock_path, record_path = _paths(bus, cache_dir)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        record = _record(record_path)
        pid, address = record.get("pid"), record.get("ray_address")
        raise BusNameTaken(
            bus,
            pid if isinstance(pid, int) else None,
            address if isinstance(address, str) else None,
        ) from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            record_path.unlink()
        os.close(fd)


# A local Ray started by ray.init() requires its token by default, and Ray enables token
# auth on the joining side only for address "auto": a joiner by address must be told.
_AUTH_MODE_ENV = "RAY_AUTH_MODE"


def record_bus_address(bus: str, address: str, *, cache_dir: Path | None = None) -> None:
    """Say where the claimed bus's Ray is (call inside :func:`claim_bus_name`)."""
    _, record_path = _paths(bus, cache_dir)
    record = {
        "pid": os.getpid(),
        "ray_address": address,
        "ray_auth_mode": os.environ.get(_AUTH_MODE_ENV),  # what this Ray's start chose
    }
    tmp = record_path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, record_path)


def local_bus_address(bus: str, *, cache_dir: Path | None = None) -> str | None:
    """The Ray address of a bus ``raybus up`` runs on this machine, if one does."""
    lock_path, record_path = _paths(bus, cache_dir)
    if not _held(lock_path):
        return None
    address = _record(record_path).get("ray_address")
    return address if isinstance(address, str) else None


def local_bus_auth_mode(bus: str, *, cache_dir: Path | None = None) -> str | None:
    """The ``RAY_AUTH_MODE`` a process joining that bus's Ray needs (None: Ray's default)."""
    _, record_path = _paths(bus, cache_dir)
    mode = _record(record_path).get("ray_auth_mode")
    return mode if isinstance(mode, str) else None


def local_buses(*, cache_dir: Path | None = None) -> dict[str, str]:
    """Every bus ``raybus up`` runs on this machine now, with its Ray's address."""
    base = (cache_dir or default_cache_dir()) / _DIR
    found = {}
    for lock_path in sorted(base.glob("*.lock")):
        address = local_bus_address(lock_path.stem, cache_dir=cache_dir)
        if address is not None:
            found[lock_path.stem] = address
    return found
