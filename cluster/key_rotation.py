"""Rotating the keys of a running encrypted bus, step by step (``raybus keys``).

Each step goes to the bus's keys actor (:mod:`cluster.ray_actors.keys`), which refuses
it while it would fail calls in flight (:mod:`actors.keys` says when), and then waits,
bounded, until every live process of the bus has applied it (each follows the state
about once a second: :mod:`cluster.backends.key_follower`). A wait that runs out names
the processes that did not answer; running the same step again is safe.

The safe order, each step after the previous one returned::

    await add_key("payments", "k2", key)     # every process can open k2
    await promote_key("payments", "k2")      # every process seals with k2
    await retire_key("payments", "k1")       # after the drain: k1 opens nothing more
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from ray.exceptions import RayTaskError

from actors.keys import DrainPending, RotationRefused
from cluster.naming import actor_names, get_actor_async
from transports.errors import BusError, ConnectionClosed

__all__ = [
    "DEFAULT_DRAIN_S",
    "DEFAULT_STEP_TIMEOUT_S",
    "NotEncrypted",
    "RotationIncomplete",
    "add_key",
    "describe_keys",
    "promote_key",
    "retire_key",
]

# How long a retired key must have sealed nothing before it stops opening: what was
# sealed with it just before every process switched may still wait in a topic or queue.
# A request that waits longer than its deadline fails either way, so this is the
# longest call deadline of the bus (the pools' default timeout is 60 s).
DEFAULT_DRAIN_S = 60.0
# Every live process asks once a second; on a loaded 2-core machine an answer took
# several seconds.
DEFAULT_STEP_TIMEOUT_S = 60.0
_POLL_S = 0.2


class NotEncrypted(BusError):
    """No keys actor for the bus: it is not running, or has no ``encryption`` section."""

    def __init__(self, bus: str) -> None:
        super().__init__(bus)
        self.bus = bus

    def __str__(self) -> str:
        return (
            f"bus {self.bus!r} has no keys to rotate: it is not running, or its "
            "configuration has no encryption section"
        )


class RotationIncomplete(BusError):
    """A step was taken, but not every live process applied it in time."""

    def __init__(self, bus: str, step: str, version: int, lagging: dict[str, int]) -> None:
        super().__init__(bus, step, version, lagging)
        self.bus = bus
        self.step = step
        self.version = version
        self.lagging = lagging

    def __str__(self) -> str:
        names = sorted(self.lagging)
        shown = ", ".join(f"{n} (at v{self.lagging[n]})" for n in names[:3])
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        return (
            f"bus {self.bus!r}: {self.step} (version {self.version}) was not applied in "
            f"time by {shown}{more}; run the same command again to wait longer"
        )


async def _keys_actor(bus: str) -> Any:
    try:
        return await get_actor_async(actor_names.keys(bus))
    except ConnectionClosed:
        raise NotEncrypted(bus) from None


async def _answer(call: Awaitable[Any]) -> Any:
    """The actor's answer, its own refusal re-raised as itself (not wrapped by Ray)."""
    try:
        return await call
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BusError):
            raise cause from None
        raise


async def describe_keys(bus: str) -> dict[str, Any]:
    """Version, sealing key, key ids that open, retired ids, and each live process's
    version (no key material).

    Raises:
        NotEncrypted: no such bus, or it is not encrypted.
    """
    actor = await _keys_actor(bus)
    described: dict[str, Any] = await _answer(actor.describe.remote())
    return described


async def _applied_everywhere(
    actor: Any, bus: str, step: str, version: int, deadline: float
) -> dict[str, Any]:
    while True:
        described: dict[str, Any] = await _answer(actor.describe.remote())
        lagging = {n: v for n, v in described["members"].items() if v < version}
        if not lagging:
            return described
        if time.monotonic() >= deadline:
            raise RotationIncomplete(bus, step, version, lagging)
        await asyncio.sleep(_POLL_S)  # polling the processes' answers, bounded above


async def add_key(
    bus: str, key_id: str, key: bytes, *, timeout_s: float = DEFAULT_STEP_TIMEOUT_S
) -> dict[str, Any]:
    """Add a key (opening only) and wait until every live process holds it.

    Raises:
        NotEncrypted: no such bus, or it is not encrypted.
        RotationRefused: a malformed id or key, a retired id, an id holding another key.
        RotationIncomplete: added, but not applied everywhere within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    actor = await _keys_actor(bus)
    version: int = await _answer(actor.add.remote(key_id, key))
    return await _applied_everywhere(actor, bus, f"adding {key_id!r}", version, deadline)


async def promote_key(
    bus: str, key_id: str, *, timeout_s: float = DEFAULT_STEP_TIMEOUT_S
) -> dict[str, Any]:
    """Seal with ``key_id`` from now on, once every live process holds it; waits until
    every one seals with it.

    Raises:
        NotEncrypted: no such bus, or it is not encrypted.
        RotationRefused: no such key, or a process does not hold it yet (add it first).
        RotationIncomplete: promoted, but not applied everywhere within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    actor = await _keys_actor(bus)
    version: int = await _answer(actor.promote.remote(key_id))
    return await _applied_everywhere(actor, bus, f"promoting {key_id!r}", version, deadline)


async def retire_key(
    bus: str,
    key_id: str,
    *,
    drain_s: float = DEFAULT_DRAIN_S,
    timeout_s: float = DEFAULT_STEP_TIMEOUT_S,
) -> dict[str, Any]:
    """Stop opening ``key_id`` once every process seals with another key and ``drain_s``
    passed since; waits for the drain, then until every live process dropped it.

    Raises:
        NotEncrypted: no such bus, or it is not encrypted.
        RotationRefused: no such key, or it still seals (promote another first).
        RotationIncomplete: a process did not switch, or did not drop the key, within
            ``timeout_s`` (plus the drain).
    """
    if drain_s < 0:
        raise ValueError("drain_s must be >= 0")
    deadline = time.monotonic() + timeout_s + drain_s
    actor = await _keys_actor(bus)
    described = await describe_keys(bus)
    step = f"switching away from {key_id!r}"
    await _applied_everywhere(actor, bus, step, described["version"], deadline)
    while True:
        try:
            version: int = await _answer(actor.retire.remote(key_id, drain_s))
            break
        except DrainPending as pending:
            if time.monotonic() + pending.left_s > deadline:
                raise
            await asyncio.sleep(pending.left_s)  # the drain itself: nothing to wait on
        except RotationRefused:
            # Only a process that joined meanwhile (and applies the state at once) is
            # worth waiting for; any other refusal is final.
            described = await describe_keys(bus)
            behind = [v for v in described["members"].values() if v < described["version"]]
            if not behind or time.monotonic() >= deadline:
                raise
            await asyncio.sleep(_POLL_S)
    return await _applied_everywhere(actor, bus, f"retiring {key_id!r}", version, deadline)
