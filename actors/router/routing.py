"""Routing: which pool serves a request, decided from its envelope alone.

One function for every backend: the Ray router queues by it, and clients on a broker
backend pick the pool's topic or queue by it, so the same request gets the same answer
(or the same error) whichever way it travels.
"""

from __future__ import annotations

from actors.discovery.catalog import Kind
from actors.discovery.registry import Membership
from actors.replies import error_reply
from transports.errors import INVALID_PARAMS, METHOD_NOT_FOUND
from transports.frame import Frame

__all__ = ["KIND_OF_METHOD", "pool_for"]

KIND_OF_METHOD = {
    "tools/call": Kind.TOOL,
    "prompts/get": Kind.PROMPT,
    "resources/read": Kind.RESOURCE,
    "resources/subscribe": Kind.RESOURCE,
    "resources/unsubscribe": Kind.RESOURCE,
}
_LABELS = {Kind.TOOL: "tool", Kind.PROMPT: "prompt", Kind.RESOURCE: "resource"}


def pool_for(membership: Membership | None, frame: Frame) -> str | Frame:
    """The name of the pool that serves ``frame``'s request, or the error reply to send.

    ``completion/complete`` names a prompt or a resource template, so both are looked up.
    An unknown resource answers -32602 with the URI in ``data`` (SEP-2164).
    """
    envelope = frame.envelope
    method = envelope.method or ""
    name = envelope.name
    kind = KIND_OF_METHOD.get(method)
    if name is None or (kind is None and method != "completion/complete"):
        return error_reply(frame, METHOD_NOT_FOUND, f"method {method!r} is not routed to pools")
    if membership is not None:
        kinds = [kind] if kind else [Kind.PROMPT, Kind.RESOURCE]
        pool = next((p for k in kinds if (p := membership.pool_for(k, name))), None)
        if pool is not None:
            return pool
    label = _LABELS.get(kind or "", "reference")
    data = {"uri": name} if kind == Kind.RESOURCE else None
    return error_reply(frame, INVALID_PARAMS, f"Unknown {label}: {name}", data)
