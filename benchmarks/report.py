"""The rows of ``raybus bench`` and how they print: a table, or one JSON object.

A row compares raybus with an anchor measured in the same run (the SDK serving the same
server, a raw broker round trip, the same bus under lighter load). The *ratio* is
raybus's figure over the anchor's; absolute figures depend on what else the machine is
doing and are shown only to read the ratio by. Each row carries the issue's goal and
whether this run met it (``None``: nothing to meet, the figure is reported).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.measure import RoundResult, percentile

__all__ = [
    "Row",
    "Side",
    "Status",
    "comparison_notes",
    "cpu_note",
    "format_table",
    "side_from_rounds",
]


class Status(enum.StrEnum):
    MEASURED = "measured"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass
class Side:
    """One side of a comparison, over all its rounds.

    ``value`` is the row's figure (in the row's unit); ``per_round`` the same figure of
    each round, in the order run; ``cpu_cores`` the cores each process group used on
    average while this side ran (e.g. the load generator's).
    """

    label: str
    value: float | None
    p50_ms: float | None = None
    p99_ms: float | None = None
    calls: int = 0
    errors: int = 0
    per_round: list[float] = field(default_factory=list)
    cpu_cores: dict[str, float] = field(default_factory=dict)
    first_error: str | None = None


def side_from_rounds(label: str, rounds: Sequence[RoundResult], *, figure: str = "rate") -> Side:
    """Pool a side's rounds into one figure: ``"rate"`` (calls/s over all of them),
    ``"p50"`` or ``"p99"`` (ms, over every successful call of every round).

    Latency percentiles always pool every successful call of every round.
    """
    latencies = [ms for r in rounds for ms in r.latencies_ms]
    elapsed = sum(r.elapsed_s for r in rounds)
    calls = sum(r.calls for r in rounds)
    if figure == "rate":
        value: float | None = calls / elapsed if elapsed > 0 else None
        per_round = [r.rate for r in rounds]
    else:
        fraction = {"p50": 0.5, "p99": 0.99}[figure]
        value = percentile(latencies, fraction)
        per_round = [p for r in rounds if (p := percentile(r.latencies_ms, fraction)) is not None]
    groups = {g for r in rounds for g in r.cpu_s}
    cores = {g: sum(r.cpu_s.get(g, 0.0) for r in rounds) / elapsed for g in groups if elapsed}
    return Side(
        label=label,
        value=value,
        p50_ms=percentile(latencies, 0.5),
        p99_ms=percentile(latencies, 0.99),
        calls=calls,
        errors=sum(r.errors for r in rounds),
        per_round=per_round,
        cpu_cores=dict(sorted(cores.items())),
        first_error=next((r.first_error for r in rounds if r.first_error), None),
    )


@dataclass
class Row:
    """One workload's result; ``status`` other than measured leaves the figures empty."""

    id: str
    workload: str
    goal: str
    unit: str = ""
    status: Status = Status.MEASURED
    reason: str | None = None
    raybus: Side | None = None
    anchor: Side | None = None
    ratio: float | None = None
    ratio_range: tuple[float, float] | None = None
    met: bool | None = None
    latency_at: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def compared(
        cls, id: str, workload: str, goal: str, unit: str, raybus: Side, anchor: Side, **extra: Any
    ) -> Row:
        """A row whose ratio is raybus's figure over the anchor's, with the per-round range."""
        ratio = raybus.value / anchor.value if raybus.value and anchor.value else None
        pairs = [b / a for b, a in zip(raybus.per_round, anchor.per_round, strict=False) if a]
        ratio_range = (min(pairs), max(pairs)) if len(pairs) > 1 else None
        return cls(
            id,
            workload,
            goal,
            unit,
            raybus=raybus,
            anchor=anchor,
            ratio=ratio,
            ratio_range=ratio_range,
            **extra,
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        return data


def _figure(side: Side | None, unit: str) -> str:
    if side is None or side.value is None:
        return "-"
    value = side.value
    text = f"{value:,.0f}" if value >= 100 else f"{value:.3g}" if value < 10 else f"{value:.1f}"
    return f"{text} {unit}".strip()


def _latency(side: Side | None) -> str:
    if side is None or side.p50_ms is None or side.p99_ms is None:
        return "-"
    return f"{_ms(side.p50_ms)} / {_ms(side.p99_ms)}"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _ratio(row: Row) -> str:
    if row.ratio is None:
        return "-"
    if row.ratio_range is None:
        return f"{row.ratio:.2f}x"
    low, high = row.ratio_range
    return f"{row.ratio:.2f}x ({low:.2f}-{high:.2f})"


def _met(row: Row) -> str:
    if row.status is not Status.MEASURED:
        return f"{row.status}: {row.reason}"
    return "reported" if row.met is None else "yes" if row.met else "NO"


_COLUMNS = (
    "id",
    "workload",
    "raybus",
    "anchor",
    "ratio (round range)",
    "raybus p50/p99 ms",
    "anchor p50/p99 ms",
    "goal",
    "met",
)


def format_table(rows: Sequence[Row], header: str) -> str:
    """The rows as a fixed-width text table, then one notes paragraph per row."""
    cells = [
        [
            row.id,
            row.workload,
            _figure(row.raybus, row.unit),
            _figure(row.anchor, row.unit),
            _ratio(row),
            _latency(row.raybus),
            _latency(row.anchor),
            row.goal,
            _met(row),
        ]
        for row in rows
    ]
    widths = [max(len(c[i]) for c in [list(_COLUMNS), *cells]) for i in range(len(_COLUMNS))]
    widths[-1] = 0  # the last column is not padded (reasons can be long)

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = [header, "", line(_COLUMNS), line(["-" * w for w in widths[:-1]] + ["---"])]
    out += [line(c) for c in cells]
    noted = [row for row in rows if row.notes]
    if noted:
        out += ["", "notes:"]
        for row in noted:
            out += [f"  {row.id}  {row.notes[0]}", *(f"       {n}" for n in row.notes[1:])]
    return "\n".join(out)


def cpu_note(side: Side) -> str:
    """ "load generator 0.45 cores, raybus 1.2 cores" from a side's CPU use."""
    if not side.cpu_cores:
        return "CPU n/a"
    return ", ".join(f"{group} {cores:.2f}" for group, cores in side.cpu_cores.items()) + " cores"


def comparison_notes(raybus: Side, anchor: Side) -> list[str]:
    """Where the CPU went on each side, and any failed calls (a fast failure is no win)."""
    notes = [f"CPU in raybus rounds: {cpu_note(raybus)}; in anchor rounds: {cpu_note(anchor)}"]
    notes += [
        f"{side.label}: {side.errors} failed calls, first: {side.first_error}"
        for side in (raybus, anchor)
        if side.errors
    ]
    return notes
