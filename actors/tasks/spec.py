"""What a task store is given: its ports to the bus, its limits, and each task's spec.

Kept apart from :mod:`actors.tasks.store` (the core that uses them) so the shells, the
gateway and the tests name them without the core's weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from transports.envelope import CorrelationKey
from transports.frame import Frame

__all__ = ["TaskSettings", "TaskSpec", "TaskStorePorts"]


class TaskStorePorts(Protocol):
    @property
    def address(self) -> str:
        """Where answers to the store's calls go (their envelopes' ``reply_to``)."""
        ...

    def submit(self, frames: list[Frame]) -> None:
        """Hand calls to the bus (fire and forget: refusals come back as answers)."""
        ...

    def cancel(self, keys: list[CorrelationKey]) -> None:
        """Withdraw calls on the bus (best effort)."""
        ...

    def answer(self, destination: str, frame: Frame) -> None:
        """Answer a server-to-client request a worker sent about a task call."""
        ...


@dataclass(frozen=True)
class TaskSettings:
    """Limits and defaults of one store (the bus's ``tasks`` section)."""

    ttl_s: float = 3600.0
    max_ttl_s: float = 86_400.0
    poll_interval_ms: int = 2000
    max_result_bytes: int = 1 << 20
    max_open_tasks: int = 10_000
    max_open_per_principal: int = 100
    progress_persist_s: float = 1.0
    # After the run deadline the router's overdue watch answers 1001; the sweeper only
    # catches what nobody answered (a router that died with the call).
    deadline_grace_s: float = 5.0
    retry_backoff_s: float = 1.0


@dataclass(frozen=True)
class TaskSpec:
    """What a caller asks to run, with the pool's policy for it already applied."""

    principal: str
    tool: str
    arguments: dict[str, Any]
    run_timeout_s: float = 3600.0
    ttl_s: float | None = None
    max_attempts: int = 1
    rerun_lost: bool = False
    # The caller answers the tool's input requests (tasks/update); else they are refused.
    accepts_input: bool = False
    # More params of the call (``TaskRecord.call_params``).
    call_params: dict[str, Any] = field(default_factory=dict)
