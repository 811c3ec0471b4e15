"""Routing: which pool serves a request, decided from its envelope alone.

One function for every backend: the Ray router queues by it, and clients on a broker
backend pick the pool's topic or queue by it, so the same request gets the same answer
(or the same error) whichever way it travels.

With ``router.regions`` (:mod:`actors.router.regions`), a request carrying a region goes
only to a pool of that region (or of a region its failover list names, while none of its
own is available), among the pools offering the name; otherwise it is refused with 1010.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from actors.discovery.catalog import Catalog, Kind
from actors.discovery.registry import Membership
from actors.replies import error_reply
from actors.router.outcomes import call_label
from actors.router.regions import RegionPolicy
from transports.errors import INVALID_PARAMS, METHOD_NOT_FOUND
from transports.frame import Frame

__all__ = [
    "KIND_OF_METHOD",
    "attempts_made",
    "pool_for",
    "repeat_safe",
    "retry_safe",
    "tried_on",
    "tried_once",
]

# A safe call a client already ran on a worker it then lost (the direct lane) and sends
# the router to run again carries this, naming that worker: the router counts that run
# against the bound of retries, so a request that kills every worker it reaches runs at
# most twice either way, and does not spend the one retry on the worker it was lost on
# (the router may not have noticed yet that it died). A client that sets it only gives
# up retries of its own calls.
_TRIED = "raybus-tried"

KIND_OF_METHOD = {
    "tools/call": Kind.TOOL,
    "prompts/get": Kind.PROMPT,
    "resources/read": Kind.RESOURCE,
    "resources/subscribe": Kind.RESOURCE,
    "resources/unsubscribe": Kind.RESOURCE,
}
_LABELS = {Kind.TOOL: "tool", Kind.PROMPT: "prompt", Kind.RESOURCE: "resource"}
# Reading never changes server state: such calls may run again after a lost worker.
_SAFE_METHODS = frozenset({"prompts/get", "resources/read", "completion/complete", "ping"})


def _always(pool: str) -> bool:
    return True


def pool_for(
    membership: Membership | None,
    frame: Frame,
    regions: RegionPolicy | None = None,
    available: Callable[[str], bool] = _always,
) -> str | Frame:
    """The name of the pool that serves ``frame``'s request, or the error reply to send.

    ``completion/complete`` names a prompt or a resource template, so both are looked up.
    An unknown resource answers -32602 with the URI in ``data`` (SEP-2164).

    Args:
        regions: ``router.regions``; None: labels do not route.
        available: whether a pool can serve now (its breaker closed, workers present);
            read only for requests that carry a region.
    """
    envelope = frame.envelope
    method = envelope.method or ""
    name = envelope.name
    kind = KIND_OF_METHOD.get(method)
    if name is None or (kind is None and method != "completion/complete"):
        return error_reply(frame, METHOD_NOT_FOUND, f"method {method!r} is not routed to pools")
    if membership is not None:
        kinds = [kind] if kind else [Kind.PROMPT, Kind.RESOURCE]
        candidates = next((c for k in kinds if (c := membership.index.candidates(k, name))), ())
        if candidates and regions is None:
            return candidates[0]
        if candidates and regions is not None:
            region = regions.region_of(envelope)
            chosen = regions.choose(candidates, region, available, call_label(method, name))
            if isinstance(chosen, str):
                return chosen
            return error_reply(frame, chosen.code, chosen.message, chosen.data())
    label = _LABELS.get(kind or "", "reference")
    data = {"uri": name} if kind == Kind.RESOURCE else None
    return error_reply(frame, INVALID_PARAMS, f"Unknown {label}: {name}", data)


def retry_safe(membership: Membership | None, method: str, pool: str, name: str) -> bool:
    """May a call run again after its worker was lost? Reads, and tools annotated
    read-only or idempotent by their server."""
    catalog = membership.catalogs.get(pool) if membership is not None else None
    return repeat_safe(catalog, method, name)


def repeat_safe(catalog: Catalog | None, method: str, name: str) -> bool:
    """May this call run twice? Reads, and tools ``catalog`` (the pool's, as its workers
    list it) annotates read-only or idempotent."""
    if method in _SAFE_METHODS:
        return True
    if method != "tools/call" or catalog is None:
        return False
    tool = next((t for t in catalog.tools if t.get("name") == name), None)
    annotations = (tool or {}).get("annotations") or {}
    return bool(annotations.get("readOnlyHint") or annotations.get("idempotentHint"))


def tried_once(frame: Frame, worker: str) -> Frame:
    """``frame`` marked as run once already, on ``worker`` (see ``_TRIED``)."""
    envelope = frame.envelope
    kept = [(name, value) for name, value in envelope.attributes if name != _TRIED]
    attributes = tuple(sorted([*kept, (_TRIED, worker)]))
    return Frame(replace(envelope, attributes=attributes), frame.body)


def attempts_made(frame: Frame) -> int:
    """Runs of this request before it reached the router (0, or 1: see ``_TRIED``)."""
    return 0 if tried_on(frame) is None else 1


def tried_on(frame: Frame) -> str | None:
    """The worker this request already ran on and was lost with, if any (see ``_TRIED``)."""
    return next((value for name, value in frame.envelope.attributes if name == _TRIED), None)
