"""CPU time and resident memory of the bench's process tree, read from ``/proc``.

Everything a bench run starts descends from its own process: the local Ray (GCS,
raylet, and under it every actor process), ``raybus up``, the SDK's server and the load
generator. Ray names an actor's process ``ray::<Class>`` (``ray::<Class>.<method>``
while a method runs), so actors are told apart by that title. On a system without
``/proc`` every figure here is empty and the bench says "n/a".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ProcessInfo",
    "cpu_seconds",
    "descendants",
    "thread_cpu_seconds",
    "total_cpu_seconds",
]

_PROC = Path("/proc")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ProcessInfo:
    """One live process: its id, a short label and its resident memory."""

    pid: int
    label: str
    rss_mib: float
    cpu_s: float


def _stat_fields(pid: int) -> list[str] | None:
    return _fields_of(_PROC / str(pid) / "stat")


def _fields_of(stat: Path) -> list[str] | None:
    """The fields of a process's (or a thread's) ``stat`` after its name; None if gone."""
    try:
        raw = stat.read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return raw[raw.rfind(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (``None`` if it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime


def thread_cpu_seconds(pid: int, name_prefix: str | tuple[str, ...]) -> float:
    """CPU seconds of ``pid``'s live threads whose name starts with ``name_prefix``
    (one of them, for a tuple)."""
    total = 0
    try:
        tasks = list((_PROC / str(pid) / "task").iterdir())
    except OSError:
        return 0.0
    for task in tasks:
        try:
            name = (task / "comm").read_text().strip()
        except OSError:
            continue  # the thread ended meanwhile
        fields = _fields_of(task / "stat") if name.startswith(name_prefix) else None
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS_PER_S


def _rss_mib(pid: int) -> float | None:
    try:
        pages = int((_PROC / str(pid) / "statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * _PAGE_BYTES / 2**20


def _label(pid: int) -> str:
    try:
        argv = (_PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    first = argv[0].decode(errors="replace")
    if first.startswith("ray::"):
        return first.split()[0].split(".")[0]  # "ray::WorkerActor.call" -> "ray::WorkerActor"
    words = [a.decode(errors="replace") for a in argv if a]
    if "-m" in words[:-1]:  # python -m module [verb]: "cluster.cli up", "benchmarks.loadgen"
        at = words.index("-m")
        return " ".join(words[at + 1 : at + 3])
    scripts = [Path(w).name for w in words[1:] if w.endswith(".py")]
    return scripts[0] if scripts else Path(first).name or "?"


def _children(pid: int) -> list[int]:
    found = []
    task_dir = _PROC / str(pid) / "task"
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return []
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def descendants(root: int | None = None) -> list[int]:
    """Every live process below ``root`` (default: this process), depth first."""
    pending = _children(os.getpid() if root is None else root)
    seen: list[int] = []
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.append(pid)
        pending += _children(pid)
    return seen


def snapshot(pids: list[int]) -> list[ProcessInfo]:
    """Label, memory and CPU time of each process still alive."""
    infos = []
    for pid in pids:
        rss, cpu = _rss_mib(pid), cpu_seconds(pid)
        if rss is not None and cpu is not None:
            infos.append(ProcessInfo(pid, _label(pid), rss, cpu))
    return infos


def total_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of those processes that are alive (the gone ones count nothing)."""
    return sum(c for pid in pids if (c := cpu_seconds(pid)) is not None)
