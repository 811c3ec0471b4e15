"""What a worker refuses before anything else sees a request: today, calls outside its region.

The worker is the only thing that runs tools, so the region boundary is enforced here
whatever path a request took: the Ray router's choice, a broker client's, or a raw
publish to a pool's topic or queue by anything holding broker credentials. A refused
request reaches neither the ledger (it claims no key) nor the server; its caller gets
1010 (:data:`~transports.errors.BusErrorCode.REGION_REFUSED`).

The pool's region comes from the configuration the worker started with, never from the
request.
"""

from __future__ import annotations

from typing import Protocol

from actors.router.outcomes import call_label
from actors.router.regions import RefusalReason, RegionPolicy, RegionRefusal
from transports.envelope import Envelope

__all__ = ["ADMIT_ALL", "Admission", "RegionAdmission", "admission_for"]


class Admission(Protocol):
    def refuse(self, envelope: Envelope) -> RegionRefusal | None:
        """Why the request with ``envelope`` may not run here, or None to run it."""
        ...


class _AdmitAll:
    def refuse(self, envelope: Envelope) -> RegionRefusal | None:
        return None


ADMIT_ALL: Admission = _AdmitAll()


class RegionAdmission:
    """Admits only requests of a region ``pool`` may serve (its own, or by failover)."""

    def __init__(self, policy: RegionPolicy, pool: str) -> None:
        self._policy = policy
        self._pool = pool

    def refuse(self, envelope: Envelope) -> RegionRefusal | None:
        region = self._policy.region_of(envelope)
        if self._policy.permits(self._pool, region):
            return None
        tool = call_label(envelope.method, envelope.name)
        if region is None:
            return self._policy.refusal(None, tool, RefusalReason.NO_REGION)
        label = self._policy.label
        message = f"region refused: pool {self._pool!r} may not run {tool} of {label} {region!r}"
        return RegionRefusal(region, tool, RefusalReason.OUTSIDE, message)


def admission_for(regions: RegionPolicy | None, pool: str) -> Admission:
    """The admission of ``pool``'s workers under ``router.regions`` (None: admit all)."""
    return ADMIT_ALL if regions is None else RegionAdmission(regions, pool)
