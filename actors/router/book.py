"""The router's book: each pool's queue and workers, each call it holds, each worker's slots.

Plain records, read and changed only by :class:`~actors.router.core.RouterCore`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from actors.router.balancing import Balancer
from actors.router.breaker import CircuitBreaker
from actors.tracing import Hop, end_hop
from transports.envelope import CorrelationKey
from transports.frame import Frame

__all__ = ["PoolBook", "RoutedCall", "WorkerSlots"]


@dataclass(slots=True)
class RoutedCall:
    frame: Frame
    pool: str
    tool: str  # the metrics' label: see call_label
    queued_at_s: float
    retry_safe: bool
    attempts: int = 0
    worker: str | None = None
    answered: bool = False  # the router answered the caller (overdue); the slot stays busy
    hop: Hop | None = None  # the router's span, from queued to dispatched
    lost_on: str | None = None  # the worker a client already ran it on, and lost

    def eligible(self, candidates: list[WorkerSlots], workers: int) -> list[WorkerSlots]:
        """Where it may go: not back to the worker it was lost on while the pool has
        another (that one is dead or dying, though it may still look free here)."""
        if self.lost_on is None or workers < 2:
            return candidates
        return [w for w in candidates if w.actor_name != self.lost_on]

    def left_queue(self, error: str | None = None, description: str | None = None) -> None:
        if self.hop is not None:
            end_hop(self.hop, error, description)
            self.hop = None


@dataclass(eq=False)
class WorkerSlots:
    server_id: str
    actor_name: str
    capacity: int
    outstanding: dict[CorrelationKey, RoutedCall] = field(default_factory=dict)
    retired: bool = False
    frames_sent: int = 0
    direct: int = 0  # calls clients sent it directly, as it last reported them
    waiting: int = 0  # of outstanding, those it holds for a slot direct calls took

    @property
    def outstanding_count(self) -> int:
        return len(self.outstanding) + self.direct

    @property
    def free(self) -> int:
        return 0 if self.retired else self.capacity - self.outstanding_count


@dataclass
class PoolBook:
    name: str
    breaker: CircuitBreaker
    balancer: Balancer
    queue: deque[RoutedCall] = field(default_factory=deque)
    workers: dict[str, WorkerSlots] = field(default_factory=dict)
    completed: int = 0
    routable_at: float = 0.0  # when it last had a worker to route to (router's clock)
    span_extra: tuple[tuple[str, str], ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        self.span_extra = (("raybus.pool", self.name),)
