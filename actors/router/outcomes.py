"""How calls ended, counted per batch for the router's metrics port.

The router sees every call's end: a worker's :class:`~actors.router.core.Completion`, or
an error the router answers itself (queue full, breaker open, deadline passed, worker
lost, nothing serves the name). Each end is one :class:`CallOutcome`. A
:class:`CallTally` collects one batch's ends as plain counts and latencies, so whatever
records them (``cluster.metrics``) is called once per batch, not once per call.

Labels stay bounded: a call is named by its tool only for ``tools/call`` (tool names come
from the pools' catalogs once routed); other methods are named by the method, never by a
resource URI; a call that names nothing any pool serves is counted under :data:`UNROUTED`
for both pool and tool, since its name is whatever a client sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["UNROUTED", "CallOutcome", "CallTally", "call_label"]

# Pool names match ^[a-z0-9]...: "-" can never be one.
UNROUTED = "-"


class CallOutcome(StrEnum):
    """How one call ended, as the ``outcome`` label of ``raybus_requests_total``."""

    OK = "ok"
    TOOL_ERROR = "tool_error"  # a result with isError: the tool reported a failure
    ERROR = "error"  # a JSON-RPC error from the server (bad params, unknown name, ...)
    FAULT = "fault"  # the pool failed the call (crash, internal error, shutting down)
    TIMEOUT = "timeout"  # the deadline passed (queued or running)
    CANCELLED = "cancelled"
    OVERLOADED = "overloaded"  # refused: the pool's queue was full
    CIRCUIT_OPEN = "circuit_open"  # refused: the pool's breaker was open
    LOST = "lost"  # the worker was lost with the call on it (outcome unknown)
    UNROUTABLE = "unroutable"  # no pool serves the name
    INVALID = "invalid"  # refused before routing (a request id already in flight)


def call_label(method: str | None, name: str | None) -> str:
    """The ``tool`` label of a routed call: the tool's name, or the method for others."""
    if method == "tools/call" and name:
        return name
    return method or UNROUTED


@dataclass(slots=True)
class CallTally:
    """One batch's call ends: counts per (pool, tool, outcome) and latencies per pool."""

    outcomes: dict[tuple[str, str, str], int] = field(default_factory=dict)
    latencies_s: dict[str, list[float]] = field(default_factory=dict)

    def add(self, pool: str, tool: str, outcome: CallOutcome) -> None:
        key = (pool, tool, outcome.value)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def latency(self, pool: str, seconds: float) -> None:
        self.latencies_s.setdefault(pool, []).append(seconds)

    def __bool__(self) -> bool:
        return bool(self.outcomes or self.latencies_s)
