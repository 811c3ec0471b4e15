"""Picking up after a Ray restart of a control actor.

The control actors (router, discovery, supervisor, autoscaler) are created with
``max_restarts=-1``: when their process dies Ray runs their constructor again, under the
same name and handle, but nothing calls the ``start`` that launched their loops the first
time (the bus's launcher did, and it is long gone). Each constructor therefore asks
:func:`restarted` and, if so, schedules its own start with a call to itself
(:func:`itself`): the call runs once the constructor has returned, on the actor's event
loop, like any other.

That one call was seen to go missing (a restarted supervisor, about one run in six under
load, never adopted its workers): :func:`start_itself` sends it again a few times until
the actor says its start has begun, so a restarted actor resumes within seconds even
then. The starts it calls are idempotent or guarded by that same flag.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ray

from cluster.naming import NAMESPACE

__all__ = [
    "CONTROL_ACTOR_OPTIONS",
    "DeferredStart",
    "deferring_starts",
    "itself",
    "restarted",
    "start_itself",
]

# How every control actor of a bus is created: named in raybus's namespace, outliving
# its creator, restarted by Ray when its process dies, taking no CPU from workers.
CONTROL_ACTOR_OPTIONS: dict[str, Any] = {
    "namespace": NAMESPACE,
    "lifetime": "detached",
    "max_restarts": -1,
    "num_cpus": 0,
    "max_concurrency": 10_000,
}

# When to send the start call again if the actor has not begun its start by then (s).
_RESEND_AFTER_S = (5.0, 15.0, 45.0)

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


@dataclass(frozen=True)
class DeferredStart:
    """A start a part of a control process asked for while it was constructed."""

    method: str
    begun: Callable[[], bool]
    kwargs: dict[str, Any]


# Set while a control process (``cluster.ray_actors.control``) constructs a part.
_deferred: contextvars.ContextVar[list[DeferredStart] | None] = contextvars.ContextVar(
    "raybus_deferred_starts", default=None
)


@contextlib.contextmanager
def deferring_starts() -> Iterator[list[DeferredStart]]:
    """While constructing a part of a control process: :func:`start_itself` records
    the part's start in the list yielded instead of sending it. The process sends one
    call that runs them all: several self-calls sent from one constructor were seen to
    lose all but the first until their resend, 5 s later."""
    starts: list[DeferredStart] = []
    token = _deferred.set(starts)
    try:
        yield starts
    finally:
        _deferred.reset(token)


def start_itself(method: str, begun: Callable[[], bool], **kwargs: Any) -> None:
    """Call the calling actor's ``method`` (its start), and again while ``begun()`` is
    false after each of :data:`_RESEND_AFTER_S`. Call from the constructor."""
    deferred = _deferred.get()
    if deferred is not None:
        deferred.append(DeferredStart(method, begun, kwargs))
        return
    handle = itself()

    def send() -> None:
        if not begun():
            getattr(handle, method).remote(**kwargs)

    send()
    for delay_s in _RESEND_AFTER_S:
        timer = threading.Timer(delay_s, send)
        timer.daemon = True  # never holds the process up
        timer.start()
