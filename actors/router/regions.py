"""Region-aware routing: keep a request labelled with a region on pools of that region.

Pools carry labels (``labels: {region: eu}``) and requests carry labels
(:mod:`transports.labels`). When ``router.regions`` is configured, a request whose
region is ``eu`` runs only on a pool labelled ``region: eu``, or on a region that
``router.regions.failover`` names for ``eu`` (in that order of preference, and only while
no pool of ``eu`` is available). Otherwise it fails closed with 1010
(:data:`~transports.errors.BusErrorCode.REGION_REFUSED`): the bus never crosses the
boundary on its own.

The rule is one pure object, :class:`RegionPolicy`, used in two places that must agree:

- routing (:meth:`RegionPolicy.choose`): the Ray router and broker clients pick the pool;
- admission (:meth:`RegionPolicy.permits`): every worker checks the request it took,
  before its ledger or its server sees it, so no path (a routing bug, a raw publish to a
  pool's topic) runs a call outside its region.

A pool's region comes from the configuration (``pool_regions``, derived from
``pools[].labels`` when the bus configuration is validated), never from heartbeats.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from transports.envelope import Envelope
from transports.errors import BusErrorCode
from transports.labels import LABEL_KEY, LABEL_VALUE, labels_of

__all__ = [
    "LabelledPool",
    "PlacedPool",
    "RefusalReason",
    "RegionPolicy",
    "RegionRefusal",
    "placement_notes",
    "region_problem",
]


class RefusalReason(StrEnum):
    NOT_OFFERED = "not_offered"  # no pool of the region (or its failovers) offers the name
    UNAVAILABLE = "unavailable"  # the region has such pools, but none can serve now
    NO_REGION = "no_region"  # the request carries none and router.regions.require is on
    CONFLICT = "conflict"  # the request's region differs from its caller's pinned one
    OUTSIDE = "outside"  # a worker took a request of a region its pool may not serve


@dataclass(frozen=True, slots=True)
class RegionRefusal:
    """Why a request is refused; becomes a 1010 reply (:meth:`data`, :attr:`message`)."""

    region: str | None
    tool: str
    reason: RefusalReason
    message: str

    code = BusErrorCode.REGION_REFUSED

    def data(self) -> dict[str, Any]:
        return {"region": self.region, "tool": self.tool, "reason": self.reason.value}


class LabelledPool(Protocol):
    """What the rule reads of a pool's configuration (``cluster.config.PoolConfig``)."""

    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def min_workers(self) -> int: ...


class PlacedPool(LabelledPool, Protocol):
    """A pool with where its workers may run (Ray node labels)."""

    @property
    def label_selector(self) -> Mapping[str, str]: ...


class RegionPolicy(BaseModel):
    """``router.regions``: which label means "region" and the only crossings allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field("region", description="the label key whose value is the region")
    require: bool = Field(False, description="refuse (1010) a request that carries no region")
    default: str | None = Field(None, description="the region of requests that carry none")
    failover: dict[str, list[str]] = Field(
        default_factory=dict, description="region -> regions it may run in, in order"
    )
    # A pool that keeps workers (min_workers > 0) but has had none routable this long
    # counts as unavailable, so a failover region may take its calls.
    failover_after_s: float = Field(30.0, gt=0)
    # Derived from pools[].labels when the bus configuration is validated; set by hand it
    # must agree (a dumped configuration read back carries it).
    pool_regions: dict[str, str | None] = Field(default_factory=dict)
    # Pools at min_workers 0: always available (a call wakes them, as without regions).
    waking_pools: frozenset[str] = frozenset()

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        if not LABEL_KEY.match(value):
            raise ValueError(f"label key {value!r} must match {LABEL_KEY.pattern}")
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.require and self.default is not None:
            raise ValueError("give require or default, not both")
        for region, targets in self.failover.items():
            for value in (region, *targets):
                if not LABEL_VALUE.match(value):
                    raise ValueError(f"failover: region {value!r} must match {LABEL_VALUE.pattern}")
            if region in targets:
                raise ValueError(f"failover.{region}: a region cannot fail over to itself")
        return self

    def derived(self, pools: Sequence[LabelledPool]) -> RegionPolicy:
        """This policy with the pools' regions filled in from their labels."""
        return self.model_copy(
            update={
                "pool_regions": {p.name: p.labels.get(self.label) for p in pools},
                "waking_pools": frozenset(p.name for p in pools if p.min_workers == 0),
            }
        )

    def regions(self, pools: Sequence[LabelledPool]) -> set[str]:
        """The regions the pools carry."""
        return {p.labels[self.label] for p in pools if self.label in p.labels}

    # -- the rule --------------------------------------------------------------------

    def region_of(self, envelope: Envelope) -> str | None:
        """The region a request must run in: its label, else ``default``, else None."""
        return labels_of(envelope).get(self.label) or self.default

    def permits(self, pool: str, region: str | None) -> bool:
        """May ``pool`` run a request of ``region``? (The worker's check.)"""
        if region is None:
            return not self.require
        pool_region = self.pool_regions.get(pool)
        return pool_region is not None and (
            pool_region == region or pool_region in self.failover.get(region, ())
        )

    def choose(
        self,
        candidates: Sequence[str],
        region: str | None,
        available: Callable[[str], bool],
        tool: str,
    ) -> str | RegionRefusal:
        """The pool to serve a request of ``region``, or why none may.

        Args:
            candidates: the pools offering the name, the name's owner first, then in
                registration order (``CapabilityIndex.candidates``); not empty.
            available: whether a pool can serve now (breaker closed, workers present).
        """
        if region is None:
            if self.require:
                return self.refusal(None, tool, RefusalReason.NO_REGION)
            unregioned = [p for p in candidates if self.pool_regions.get(p) is None]
            return (unregioned or list(candidates))[0]
        for allowed in (region, *self.failover.get(region, ())):
            for pool in candidates:
                if self.pool_regions.get(pool) == allowed and available(pool):
                    return pool
        offered = any(self.pool_regions.get(p) == region for p in candidates)
        reason = RefusalReason.UNAVAILABLE if offered else RefusalReason.NOT_OFFERED
        return self.refusal(region, tool, reason, candidates)

    def refusal(
        self,
        region: str | None,
        tool: str,
        reason: RefusalReason,
        candidates: Sequence[str] = (),
    ) -> RegionRefusal:
        """The 1010 refusal of a request of ``region`` for ``tool``, its message worded."""
        if reason is RefusalReason.NO_REGION:
            text = f"{tool} carries no {self.label!r} label and router.regions.require is on"
        else:
            pools = [p for p in candidates if self.pool_regions.get(p) == region]
            state = "none is available" if pools else "none offers it"
            crossings = self.failover.get(region or "", [])
            fallback = (
                f"nor in its failover regions {', '.join(crossings)}"
                if crossings
                else "router.regions.failover allows no other region"
            )
            text = f"no pool in {self.label} {region!r} can serve {tool} ({state}); {fallback}"
        return RegionRefusal(region, tool, reason, f"region refused: {text}")


def placement_notes(policy: RegionPolicy | None, pools: Sequence[PlacedPool]) -> list[str]:
    """One line per region-labelled pool whose workers may run anywhere (no
    ``label_selector`` on the region key): labels keep calls on a pool, not a pool on
    the region's nodes."""
    if policy is None:
        return []
    key = policy.label
    return [
        f"pools[{i}]: labels.{key}={region} keeps calls on this pool, not this pool on"
        f" {region} nodes; add label_selector: {{{key}: {region}}}"
        for i, pool in enumerate(pools)
        if (region := pool.labels.get(key)) is not None and key not in pool.label_selector
    ]


def region_problem(
    policy: RegionPolicy | None, pools: Sequence[LabelledPool]
) -> tuple[str, str] | None:
    """The first problem of ``router.regions`` against the pools, as (field path, why)."""
    if policy is None:
        return None
    regions = policy.regions(pools)
    if not regions:
        return "router.regions", f"no pool carries the label {policy.label!r}"
    for region, targets in policy.failover.items():
        for i, target in enumerate(targets):
            if target not in regions:
                return (
                    f"router.regions.failover.{region}[{i}]",
                    f"no pool carries region {target!r}",
                )
    if policy.default is not None and policy.default not in regions:
        return "router.regions.default", f"no pool carries region {policy.default!r}"
    derived = policy.derived(pools)
    if policy.pool_regions and policy.pool_regions != derived.pool_regions:
        return "router.regions.pool_regions", "derived from pools[].labels; do not set it"
    return None
