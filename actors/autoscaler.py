"""Autoscaling decisions: resize a pool from its lag, fast up, slow and safe down.

Pure logic with an injected clock; the autoscaler actor (``cluster``) feeds it signals
every interval and applies the sizes it returns. The default :class:`LagPolicy`::

    desired = clamp(ceil((queued + in_flight) / target_per_worker), min_workers, ceiling)

* up: once desired has stayed above the current size for ``upscale_delay_s`` (default
  0.5 s), by at most ``max_step_up`` workers per decision; a step the pool's warm
  spares (:attr:`Signals.spares`) cover alone is taken at once, without the delay: a
  spare already runs, loaded and handshaken, so activating it costs an actor call where
  a start costs a process, and a blip it was activated for only keeps it routed for the
  downscale window instead of idle;
* down: only after every desired size seen during ``downscale_window_s`` (default 30 s)
  was below the current size, to the highest of them, by at most ``max_step_down``;
* zero: with ``min_workers == 0`` a pool may shrink to nothing and wakes on the first
  queued call (``activation_threshold`` calls), without the upscale delay;
* missing or stale signals hold the current size: no data is not zero load;
* never more workers than ``max_consumers`` (e.g. a Kafka topic's partitions) when set.

The ceiling is ``max_workers`` lowered by two limits, each named in the decision's reason:

* resources: a pool whose workers reserve resources or need nodes with certain labels
  (``limited_by_cluster``) grows by at most :attr:`Signals.room` workers per decision:
  how many more of its workers the nodes it may use can run on their free CPUs, GPUs,
  memory and custom resources (see :mod:`actors.capacity`). More workers than the cluster
  can place would wait unscheduled, adding nothing. Pools reserving nothing are I/O-bound
  by declaration and have no resource ceiling.
* saturation: after a scale-up from n to m workers, once all m serve, their calls/s over
  ``saturation_window_s`` (while calls stayed queued, so the rate is what m can do) is
  compared with the rate at n. If it rose by less than ``saturation_min_gain`` of the
  proportional gain ``(m - n) / n`` (default 0.15: doubling the pool must add at least
  15%), more workers stopped helping (CPU, a shared backend, a lock): the pool is held at
  m, no further scale-up, for ``downscale_window_s``; the pool's load dropping (it no
  longer wants more workers) clears the hold sooner. While the m workers are measured,
  the pool does not grow further: the next step is judged against their rate. Pools
  whose signals carry no completed-calls counter (``Signals.completed is None``, e.g.
  broker backends) skip the rule.

Every call to :meth:`LagPolicy.decide` returns a :class:`Decision` with its reason.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
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
    saturation_window_s: float = Field(
        2.0, gt=0, description="how long the calls/s of a new size are measured"
    )
    saturation_min_gain: float = Field(
        0.15, ge=0, description="share of the proportional calls/s gain a scale-up must add; 0: off"
    )


@dataclass(frozen=True, slots=True)
class Signals:
    """One observation of a pool. ``None`` fields mean the source did not say.

    ``completed`` is a cumulative count of calls the pool's workers finished and
    ``workers`` the workers serving (routed); with both, the saturation rule applies.
    ``room`` is how many more workers of this pool the cluster can run now, and
    ``room_note`` says what limits it (``the cluster has 1 CPU(s) free for workers of
    2 CPU(s)``), for the decision's reason. ``spares``: the pool's warm spares ready to
    be activated (a scale-up takes them without the upscale delay).
    """

    at_s: float
    queued: int | None
    in_flight: int | None
    oldest_age_s: float | None = None
    completed: int | None = None
    workers: int | None = None
    room: int | None = None
    room_note: str = ""
    spares: int = 0


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


@dataclass(frozen=True, slots=True)
class _Sample:
    at_s: float
    completed: int
    queued: int


@dataclass(slots=True)
class _Probe:
    """A scale-up whose gain is being measured."""

    from_size: int
    to_size: int
    baseline: float | None  # calls/s at from_size, if it was measured under a queue
    seen_at_size_s: float | None = None  # first observation after the resize
    serving_since_s: float | None = None  # first observation with every worker routed


@dataclass(slots=True)
class _Saturation:
    """Calls/s per pool size, and whether the last scale-up stopped paying off."""

    window_s: float
    min_gain: float
    cooldown_s: float
    serve_wait_s: float  # how long new workers may take to be routed before the probe ends
    size: int = -1  # the size ``samples`` were taken at; -1: not every worker serves
    samples: deque[_Sample] = field(default_factory=deque)
    measured: tuple[int, float] | None = None  # (size, calls/s) under a queue
    probe: _Probe | None = None
    hold_until_s: float | None = None
    hold_reason: str = ""

    def observe(self, now: float, current: int, signals: Signals) -> None:
        """Record one observation; settle a probe whose window is complete."""
        if signals.completed is None or signals.workers is None or signals.queued is None:
            self.samples.clear()
            self.probe = None  # no counter: the rule does not apply
            return
        if self.samples and signals.completed < self.samples[-1].completed:
            self.samples.clear()  # the counter restarted (a restarted router)
            self.probe = None
        serving = signals.workers == current
        if current != self.size or not serving:
            self.size = current if serving else -1
            self.samples.clear()
        if serving:
            self.samples.append(_Sample(signals.at_s, signals.completed, signals.queued))
            while len(self.samples) > 2 and signals.at_s - self.samples[1].at_s >= self.window_s:
                self.samples.popleft()
        probe = self.probe
        if probe is None:
            return
        if probe.to_size != current:
            self.probe = None  # resized since: that step can no longer be judged
            return
        if probe.seen_at_size_s is None:
            probe.seen_at_size_s = now
        if not serving:  # the window needs every worker routed throughout
            probe.serving_since_s = None
            if now - probe.seen_at_size_s > self.serve_wait_s:
                self.probe = None  # a new worker never got routed: nothing to measure
            return
        if probe.serving_since_s is None:
            probe.serving_since_s = signals.at_s
        if signals.at_s - probe.serving_since_s >= self.window_s:
            self.probe = None
            self._judge(now, probe)

    def _judge(self, now: float, probe: _Probe) -> None:
        rate = self.rate(self.window_s)
        if rate is None:
            return  # the queue emptied: the pool absorbed its load, nothing to judge
        n, m = probe.from_size, probe.to_size
        self.measured = (m, rate)
        if probe.baseline is None or probe.baseline <= 0 or n <= 0 or self.min_gain <= 0:
            return
        gain = rate / probe.baseline - 1
        wanted = self.min_gain * (m - n) / n
        if gain < wanted:
            self.hold_until_s = now + self.cooldown_s
            self.hold_reason = (
                f"saturated: {m} workers served {rate:.1f} calls/s, {n} served "
                f"{probe.baseline:.1f} ({gain:+.0%}, under the {wanted:.0%} a scale-up must add)"
            )

    def rate(self, min_span_s: float) -> float | None:
        """Calls/s over the samples at this size, if they span ``min_span_s`` under a queue."""
        if len(self.samples) < 2:
            return None
        first, last = self.samples[0], self.samples[-1]
        span = last.at_s - first.at_s
        if span <= 0 or span < min_span_s or any(s.queued == 0 for s in self.samples):
            return None
        return (last.completed - first.completed) / span

    def scaled_up(self, current: int, target: int) -> None:
        """A scale-up was decided: measure what it brings before growing again."""
        baseline = self.rate(self.window_s / 2) if self.size == current else None
        if baseline is None and self.measured is not None and self.measured[0] == current:
            baseline = self.measured[1]
        self.probe = _Probe(current, target, baseline)

    def upscale_block(self, now: float, raw: int, current: int) -> str | None:
        """Why the pool may not grow now (a hold or a measurement), or None."""
        if self.hold_until_s is not None:
            if now >= self.hold_until_s or raw <= current:
                self.hold_until_s = None  # cool-down over, or the load dropped
            else:
                left = self.hold_until_s - now
                return f"{self.hold_reason}; holding at {current} for {left:.0f} s"
        probe = self.probe
        if probe is None or self.min_gain <= 0:
            return None
        if probe.serving_since_s is None:
            return f"waiting for the {current} workers to serve before growing further"
        elapsed = now - probe.serving_since_s
        return (
            f"measuring the calls/s of {current} workers ({elapsed:.1f} of "
            f"{self.window_s:g} s) before growing further"
        )


@dataclass
class _PoolHistory:
    saturation: _Saturation
    above_since_s: float | None = None
    below_since_s: float | None = None
    highest_while_below: int = 0


class LagPolicy:
    """The default policy (see the module docstring for its rules).

    ``limited_by_cluster``: the pool's workers reserve resources or need labelled nodes,
    so it grows only as far as :attr:`Signals.room` allows; otherwise it has no
    resource ceiling.
    """

    def __init__(
        self,
        config: AutoscaleConfig,
        min_workers: int,
        max_workers: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        limited_by_cluster: bool = False,
    ) -> None:
        if min_workers > max_workers:
            raise ValueError("min_workers exceeds max_workers")
        self.config = config
        self.min_workers = min_workers
        self.max_workers = min(max_workers, config.max_consumers or max_workers)
        self.limited_by_cluster = limited_by_cluster
        self._clock = clock
        self._history: dict[str, _PoolHistory] = {}

    def _pool_history(self, pool: str) -> _PoolHistory:
        history = self._history.get(pool)
        if history is None:
            config = self.config
            saturation = _Saturation(
                window_s=config.saturation_window_s,
                min_gain=config.saturation_min_gain,
                cooldown_s=config.downscale_window_s,
                serve_wait_s=config.stale_after_s,
            )
            history = self._history[pool] = _PoolHistory(saturation)
        return history

    def _resource_ceiling(self, current: int, signals: Signals) -> tuple[int, str]:
        """The most workers the cluster can run, and why (empty if not limited)."""
        if not self.limited_by_cluster:
            return self.max_workers, ""
        if signals.room is None:  # no reading is not free resources: grow no further
            return current, "no reading of the cluster's free resources"
        fits = current + max(0, signals.room)
        if fits >= self.max_workers:
            return self.max_workers, ""
        note = signals.room_note or f"the cluster has room for {signals.room} more worker(s)"
        return fits, f"ceiling {fits}: {note}"

    def decide(self, pool: str, current: int, signals: Signals | None) -> Decision:
        now = self._clock()
        history = self._pool_history(pool)

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

        saturation = history.saturation
        saturation.observe(now, current, signals)
        load = signals.queued + signals.in_flight
        raw = math.ceil(load / self.config.target_per_worker)
        ceiling, limit = self._resource_ceiling(current, signals)
        if raw > current and ceiling > current:
            blocked = saturation.upscale_block(now, raw, current)
            if blocked is not None:
                ceiling, limit = current, blocked
        elif raw <= current:
            saturation.upscale_block(now, raw, current)  # lets a drop in load clear a hold
        desired = max(self.min_workers, min(ceiling, raw))
        if desired >= current:
            history.below_since_s = None

        if current == 0 and signals.queued >= self.config.activation_threshold:
            history.above_since_s = None
            woken = min(max(1, min(desired, self.config.max_step_up)), max(ceiling, 0))
            if woken == 0:
                return decision(0, raw, f"{signals.queued} call(s) waiting at zero; {limit}")
            saturation.scaled_up(current, woken)
            return decision(woken, raw, f"activation: {signals.queued} call(s) waiting at zero")

        if desired > current:
            if history.above_since_s is None:
                history.above_since_s = now
            waited = now - history.above_since_s
            if waited < self.config.upscale_delay_s:
                step = desired - current
                if step > min(signals.spares, self.config.max_step_up):
                    # Workers must start too: the whole step waits out the delay and is
                    # taken at once (stopping at the spares would stage the growth: the
                    # saturation rule measures each new size before the next).
                    return decision(
                        current, raw, f"load {load} wants {desired}; waiting out the upscale delay"
                    )
                history.above_since_s = None
                saturation.scaled_up(current, desired)
                return decision(
                    desired,
                    raw,
                    f"load {load} over {current} worker(s): {step} warm spare(s) activated"
                    " without the upscale delay",
                )
            history.above_since_s = None
            target = min(desired, current + self.config.max_step_up)
            saturation.scaled_up(current, target)
            reason = f"load {load} over {current} worker(s): scale up"
            capped = limit and target == ceiling  # the limit, not the load, set the size
            return decision(target, raw, f"{reason} ({limit})" if capped else reason)
        if raw <= current:
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
        if raw > current and limit:
            return decision(current, raw, f"load {load} wants {raw} worker(s); {limit}")
        return decision(current, raw, "size matches load")
