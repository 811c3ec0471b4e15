"""Picking up after a Ray restart of a control actor.

The control actors (router, discovery, supervisor, autoscaler) are created with
``max_restarts=-1``: when their process dies Ray runs their constructor again, under the
same name and handle, but nothing calls the ``start`` that launched their loops the first
time (the bus's launcher did, and it is long gone). Each constructor therefore asks
:func:`restarted` and, if so, schedules its own start with a call to itself
(:func:`itself`): the call runs once the constructor has returned, on the actor's event
loop, like any other.
"""

from __future__ import annotations

import logging
from typing import Any

import ray

__all__ = ["itself", "restarted"]

logger = logging.getLogger(__name__)


def restarted() -> bool:
    """Is the calling actor a Ray restart of one that died (not its first start)?

    Call from an actor's constructor: it asks the cluster's control store, once.
    """
    context = ray.get_runtime_context()
    try:
        again = bool(context.was_current_actor_reconstructed)
    except Exception as exc:  # noqa: BLE001 - unknown: a first start is the safe reading
        logger.warning("could not tell whether this actor was restarted: %s", exc)
        return False
    if again:
        logger.warning("%s restarted after its process died", context.get_actor_name())
    return again


def itself() -> Any:
    """The calling actor's own handle (to schedule a call to itself)."""
    return ray.get_runtime_context().current_actor
