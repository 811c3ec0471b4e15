"""Choosing a worker for the next call: least outstanding, or power of two choices.

Both see only workers with a free slot. Least outstanding scans them all (pools are
small); power of two choices samples two and keeps the less loaded, which scales to
large pools and avoids herding when several routers share stale load.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol, TypeVar

__all__ = [
    "Balancer",
    "BalancingPolicy",
    "LeastOutstanding",
    "Loaded",
    "PowerOfTwoChoices",
    "balancer_for",
]


class Loaded(Protocol):
    @property
    def outstanding_count(self) -> int: ...


W = TypeVar("W", bound=Loaded)


class BalancingPolicy(StrEnum):
    LEAST_OUTSTANDING = "least_outstanding"
    POWER_OF_TWO = "power_of_two"


class Balancer(Protocol):
    def choose(self, candidates: Sequence[W]) -> W: ...


class LeastOutstanding:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, candidates: Sequence[W]) -> W:
        if not candidates:
            raise ValueError("no candidate workers")
        least = min(c.outstanding_count for c in candidates)
        tied = [c for c in candidates if c.outstanding_count == least]
        return tied[0] if len(tied) == 1 else self._rng.choice(tied)


class PowerOfTwoChoices:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, candidates: Sequence[W]) -> W:
        if not candidates:
            raise ValueError("no candidate workers")
        if len(candidates) == 1:
            return candidates[0]
        first, second = self._rng.sample(list(candidates), 2)
        return first if first.outstanding_count <= second.outstanding_count else second


def balancer_for(policy: BalancingPolicy, rng: random.Random | None = None) -> Balancer:
    if policy is BalancingPolicy.POWER_OF_TWO:
        return PowerOfTwoChoices(rng)
    return LeastOutstanding(rng)
