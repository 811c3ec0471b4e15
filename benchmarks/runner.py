"""``raybus bench``: every workload B1-B11 in one process tree, one table or one JSON.

The bench starts one local Ray (or uses the one this process already joined) and runs
the workload families one after another on it, so no two measurements share the
machine: the HTTP workloads (``raybus up --address`` of that Ray, the SDK's server and
a load generator as child processes), then the in-process ones, then the brokers.
A family that cannot run here (Kafka does not start, moto is not installed) shows
"skipped: <reason>"; one that fails shows "failed: <reason>"; the others still run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import ray

from benchmarks.brokers import KAFKA, SQS
from benchmarks.data import DATA
from benchmarks.in_process import IN_PROCESS
from benchmarks.inflight import INFLIGHT
from benchmarks.over_http import BURST, HTTP_LOOPS
from benchmarks.report import Row, Status, format_table
from benchmarks.scaling import AUTOSCALE
from benchmarks.workloads import DEFAULT_DURATION_S, DEFAULT_ROUNDS, BenchContext, Family, Skip
from benchmarks.wrapper_overhead import WRAPPERS
from cluster.local_ray import start_local_ray
from cluster.naming import NAMESPACE

__all__ = ["FAMILIES", "BenchOptions", "BenchReport", "run_bench", "run_families", "workload_ids"]

logger = logging.getLogger(__name__)

# In the order they run: HTTP first (three servers of their own), brokers last (a JVM).
FAMILIES: tuple[Family, ...] = (
    HTTP_LOOPS,
    BURST,
    IN_PROCESS,
    INFLIGHT,
    AUTOSCALE,
    KAFKA,
    SQS,
    DATA,
    WRAPPERS,
)
# A family that hangs must not hold the rest: far above what any takes on a loaded machine.
_FAMILY_BOUND_S = 900.0


def workload_ids(families: Sequence[Family] = FAMILIES) -> list[str]:
    """Every workload id, in table order (B1 ... B9, B10, B11)."""
    return sorted((w.id for f in families for w in f.workloads), key=lambda i: (len(i), i))


@dataclass(frozen=True)
class BenchOptions:
    """What to run. ``only`` = every workload when empty.

    Raises:
        ValueError: an unknown workload id, or a duration / round count below 1.
    """

    only: frozenset[str] = frozenset()
    duration_s: float = DEFAULT_DURATION_S
    rounds: int = DEFAULT_ROUNDS

    def __post_init__(self) -> None:
        unknown = sorted(self.only - set(workload_ids()))
        if unknown:
            known = ", ".join(workload_ids())
            raise ValueError(f"unknown workload(s) {', '.join(unknown)}; known: {known}")
        if not self.duration_s > 0:
            raise ValueError(f"--duration-s must be above 0, not {self.duration_s}")
        if self.rounds < 1:
            raise ValueError(f"--rounds must be at least 1, not {self.rounds}")

    @property
    def selected(self) -> frozenset[str]:
        return self.only or frozenset(workload_ids())


@dataclass
class BenchReport:
    """A run's rows and what they were measured on."""

    rows: list[Row]
    machine: dict[str, Any]
    settings: dict[str, Any]
    elapsed_s: float = 0.0
    started_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {
            "bench": "raybus",
            "started_at": self.started_at,
            "elapsed_s": self.elapsed_s,
            "machine": self.machine,
            "settings": self.settings,
            "rows": [row.as_dict() for row in self.rows],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def to_table(self) -> str:
        m, s = self.machine, self.settings
        header = (
            f"raybus bench ({m['commit']}): {m['cores']} cores, load {m['load_before']} before "
            f"/ {m['load_after']} after, {s['rounds']} rounds x {s['duration_s']:g} s per side, "
            f"{self.elapsed_s:.0f} s in all.\nThe ratio (raybus / anchor, measured in this run, "
            "rounds interleaved) is the result; absolute figures move with the machine's load."
        )
        return format_table(self.rows, header)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def _commit() -> str:
    """The commit measured (``+dirty`` with local changes), or "unknown" outside git."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown commit"
    return f"commit {head}{'+dirty' if dirty else ''}"


def _machine() -> dict[str, Any]:
    return {
        "cores": _cores(),
        "load_before": _load(),
        "load_after": None,
        "commit": _commit(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "mcp": version("mcp"),
    }


async def _run_family(family: Family, ctx: BenchContext, rows: dict[str, Row]) -> None:
    wanted = [w for w in family.workloads if ctx.wants(w)]

    def emit(row: Row) -> None:
        if row.id in ctx.selected:
            rows[row.id] = row
            ctx.progress(f"{row.id} done")

    status, reason = Status.FAILED, "ended without a result"
    bound = asyncio.timeout(_FAMILY_BOUND_S)
    try:
        async with bound:
            await family.run(dataclasses.replace(ctx, emit=emit))
    except Skip as exc:
        status, reason = Status.SKIPPED, str(exc)
    except Exception as exc:
        if bound.expired():
            reason = f"did not finish within {_FAMILY_BOUND_S:.0f} s"
        else:
            logger.exception("bench family %s failed", family.name)
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    for workload in wanted:
        if workload.id not in rows:
            rows[workload.id] = Row(
                workload.id, workload.title, workload.goal, status=status, reason=reason
            )


async def run_families(ctx: BenchContext, families: Sequence[Family]) -> list[Row]:
    """Run each family with a selected workload, in turn; one row per selected workload.

    A family raising :class:`Skip` marks its rows not yet emitted "skipped", any other
    failure (or running past a generous bound) "failed", with the reason; the next
    family runs either way.
    """
    rows: dict[str, Row] = {}
    for family in families:
        if any(ctx.wants(w) for w in family.workloads):
            ctx.progress(f"{' '.join(family.ids)}: starting")
            await _run_family(family, ctx, rows)
    order = workload_ids(families)
    return sorted(rows.values(), key=lambda row: order.index(row.id))


def run_bench(
    options: BenchOptions,
    *,
    families: Sequence[Family] = FAMILIES,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Run the selected workloads and return their rows.

    Starts a local Ray sized to this machine unless this process already joined one
    (which it then leaves running).
    """
    started = time.monotonic()
    report = BenchReport(
        [],
        _machine(),
        {
            "duration_s": options.duration_s,
            "rounds": options.rounds,
            "only": sorted(options.only),
        },
    )
    say = progress or (lambda text: print(f"raybus bench: {text}", file=sys.stderr, flush=True))
    own_ray = not ray.is_initialized()
    if own_ray:
        say("starting a local Ray")
        start_local_ray(report.machine["cores"], namespace=NAMESPACE)  # as `raybus up` does
    try:
        with tempfile.TemporaryDirectory(prefix="raybus-bench-") as workdir:
            ctx = BenchContext(
                options.duration_s,
                options.rounds,
                report.machine["cores"],
                ray.get_runtime_context().gcs_address,
                Path(workdir),
                options.selected,
                progress=say,
            )
            # Stock asyncio here, though the actors, the load generator and the SDK's
            # HTTP anchor run on uvloop: this process is a Ray driver, and awaiting actor
            # calls on uvloop raised B4's p50 (2.70 -> 3.91 ms in back-to-back runs).
            report.rows = asyncio.run(run_families(ctx, families))
    finally:
        if own_ray:
            ray.shutdown()
    report.machine["load_after"] = _load()
    report.elapsed_s = time.monotonic() - started
    return report
