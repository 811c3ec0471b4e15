"""Autoscaling decisions: resize a pool from its lag, fast up, slow and safe down.

Pure logic with an injected clock; the autoscaler actor (``cluster``) feeds it signals
every interval and applies the sizes it returns. The default :class:`LagPolicy`::

    desired = clamp(ceil((queued + in_flight) / target_per_worker), min_workers, max_workers)

* up: once desired has stayed above the current size for ``upscale_delay_s`` (default
  0.5 s), by at most ``max_step_up`` workers per decision;
* down: only after every desired size seen during ``downscale_window_s`` (default 30 s)
  was below the current size, to the highest of them, by at most ``max_step_down``;
* zero: with ``min_workers == 0`` a pool may shrink to nothing and wakes on the first
  queued call (``activation_threshold`` calls), without the upscale delay;
* missing or stale signals hold the current size: no data is not zero load;
* never more workers than ``max_consumers`` (e.g. a Kafka topic's partitions) when set.

Every call to :meth:`LagPolicy.decide` returns a :class:`Decision` with its reason.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AutoscaleConfig", "Decision", "LagPolicy", "ScalingPolicy", "Signals"]


class AutoscaleConfig(BaseModel):
    """Per-pool autoscaling settings (the bounds are the pool's min/max workers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    target_per_worker: float = Field(8.0, gt=0, description="queued + in-flight calls per worker")
    upscale_delay_s: float = Field(0.5, ge=0)
    downscale_window_s: float = Field(30.0, ge=0)
    max_step_up: int = Field(8, ge=1)
    max_step_down: int = Field(1, ge=1)
    activation_threshold: int = Field(1, ge=1, description="queued calls that wake a pool at zero")
    stale_after_s: float = Field(5.0, gt=0, description="older signals hold the size")
    max_consumers: int | None = Field(None, ge=1, description="e.g. a Kafka topic's partitions")


@dataclass(frozen=True, slots=True)
class Signals:
    """One observation of a pool. ``None`` fields mean the source did not say."""

    at_s: float
    queued: int | None
    in_flight: int | None
    oldest_age_s: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    at_s: float
    pool: str
    current: int
    desired: int
    raw_desired: int | None
    reason: str
    signals: Signals | None


class ScalingPolicy(Protocol):
    def decide(self, pool: str, current: int, signals: Signals | None) -> Decision: ...


@dataclass
class _PoolHistory:
    above_since_s: float | None = None
    below_since_s: float | None = None
    highest_while_below: int = 0


class LagPolicy:
    def __init__(
        self,
        config: AutoscaleConfig,
        min_workers: int,
        max_workers: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_workers > max_workers:
            raise ValueError("min_workers exceeds max_workers")
        self.config = config
        self.min_workers = min_workers
        self.max_workers = min(max_workers, config.max_consumers or max_workers)
        self._clock = clock
        self._history: dict[str, _PoolHistory] = {}

    def decide(self, pool: str, current: int, signals: Signals | None) -> Decision:
        now = self._clock()
        history = self._history.setdefault(pool, _PoolHistory())

        def decision(desired: int, raw: int | None, reason: str) -> Decision:
            return Decision(now, pool, current, desired, raw, reason, signals)

        if (
            signals is None
            or signals.queued is None
            or signals.in_flight is None
            or now - signals.at_s > self.config.stale_after_s
        ):
            history.above_since_s = None
            return decision(current, None, "no fresh signals: holding")

        load = signals.queued + signals.in_flight
        raw = math.ceil(load / self.config.target_per_worker)
        desired = max(self.min_workers, min(self.max_workers, raw))
        if desired >= current:
            history.below_since_s = None

        if current == 0 and signals.queued >= self.config.activation_threshold:
            history.above_since_s = None
            woken = max(1, min(desired, self.config.max_step_up))
            return decision(woken, raw, f"activation: {signals.queued} call(s) waiting at zero")

        if desired > current:
            if history.above_since_s is None:
                history.above_since_s = now
            waited = now - history.above_since_s
            if waited < self.config.upscale_delay_s:
                return decision(
                    current, raw, f"load {load} wants {desired}; waiting out the upscale delay"
                )
            history.above_since_s = None
            target = min(desired, current + self.config.max_step_up)
            return decision(target, raw, f"load {load} over {current} worker(s): scale up")
        history.above_since_s = None

        if desired < current:
            if history.below_since_s is None:
                history.below_since_s, history.highest_while_below = now, desired
            history.highest_while_below = max(history.highest_while_below, desired)
            if now - history.below_since_s < self.config.downscale_window_s:
                return decision(current, raw, "lower load not yet stable for the downscale window")
            target = max(history.highest_while_below, current - self.config.max_step_down)
            history.below_since_s = None  # the next step down waits a full window again
            return decision(
                target, raw, f"load {load} stayed under {current} worker(s): scale down"
            )
        return decision(current, raw, "size matches load")
