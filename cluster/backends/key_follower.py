"""One link's keyring kept at its bus's keyring state, on a running bus, without restart.

Each link of an encrypted bus that seals or opens (a client's wire, a worker's source,
the discovery reader) asks the bus's keys actor (:mod:`cluster.ray_actors.keys`) about
once a second whether there is a newer state, applies it to its keyring (add, then
promote, then retire: :func:`~actors.keys.apply_state`) and says so at once. That
answer is what ``raybus keys`` waits for before the next step.

The first state is fetched in :meth:`KeyFollower.start`, before the link sends or takes
anything: a process started after a rotation must not seal with a retired key. A keys
actor that does not answer later leaves the keyring as it is (logged); the process then
stops counting as live, so rotation steps no longer wait for it, and it learns the
newest state as soon as it is heard again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray.exceptions import RayError

from actors.keys import KeyringState, apply_state
from cluster.naming import actor_names, get_actor_async
from transports.crypto.keyring import Keyring
from transports.errors import BusError, ConnectionClosed

__all__ = ["FOLLOW_EVERY_S", "KeyFollower"]

logger = logging.getLogger(__name__)

FOLLOW_EVERY_S = 1.0  # one cheap actor call a second per link: compares a version number
# The first state must come before the link starts; a loaded cluster may be slow.
_FIRST_SYNC_S = 60.0
_CALL_TIMEOUT_S = 30.0
_LEAVE_TIMEOUT_S = 5.0


class KeyFollower:
    """Keeps ``keyring`` at bus ``bus``'s keyring state (see the module docstring).

    Args:
        bus: the bus whose keys actor to follow.
        keyring: the link's keyring (changed in place, on the caller's event loop).
        member: this link's name in the keys actor's list (unique per link; shown by
            ``raybus keys list`` and in a rotation's timeout message).
        every_s: how often to ask.
    """

    def __init__(
        self, bus: str, keyring: Keyring, member: str, *, every_s: float = FOLLOW_EVERY_S
    ) -> None:
        self._bus = bus
        self._keyring = keyring
        self.member = member
        self._every_s = every_s
        self._applied = 0
        self._actor: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def applied_version(self) -> int:
        return self._applied

    async def start(self) -> None:
        """Apply the bus's current state, then follow it in the background.

        Raises:
            ConnectionClosed: the bus's keys actor is not running or did not answer.
        """
        if self._task is not None:
            return
        self._actor = await get_actor_async(actor_names.keys(self._bus))
        try:
            async with asyncio.timeout(_FIRST_SYNC_S):
                await self._sync_once()
        except (TimeoutError, RayError) as exc:
            raise ConnectionClosed(
                f"the keys of bus {self._bus!r} could not be fetched: {exc or 'no answer'}"
            ) from None
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _sync_once(self) -> None:
        state: KeyringState | None = await self._actor.sync.remote(self.member, self._applied)
        if state is None:
            return
        apply_state(self._keyring, state)
        self._applied = state.version
        # Said at once (not at the next tick): a rotation step waits for this answer.
        await self._actor.sync.remote(self.member, self._applied)
        logger.info(
            "%s: keys at version %d, sealing with %s", self.member, state.version, state.current
        )

    async def _follow(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._every_s)  # the polling period, not a synchronisation
            try:
                async with asyncio.timeout(_CALL_TIMEOUT_S):
                    await self._sync_once()
            except (TimeoutError, RayError, BusError) as exc:
                if not failing:
                    logger.warning("%s: cannot follow the bus's keys: %s", self.member, exc)
                failing = True
                continue
            except (ValueError, KeyError) as exc:  # a state this keyring cannot take
                logger.error("%s: could not apply the bus's keys: %s", self.member, exc)
                continue
            if failing:
                logger.warning("%s: following the bus's keys again", self.member)
            failing = False

    async def stop(self) -> None:
        """Stop following and say so (best effort: a lease drops a silent one anyway)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        try:
            async with asyncio.timeout(_LEAVE_TIMEOUT_S):
                await self._actor.leave.remote(self.member)
        except (TimeoutError, RayError) as exc:
            logger.debug("%s: could not leave the keys actor: %s", self.member, exc)
