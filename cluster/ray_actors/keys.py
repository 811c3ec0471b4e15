"""The keys of an encrypted bus as a Ray actor: one per bus, the state its processes follow.

:class:`~actors.keys.KeyRotation` decides; this shell adds the name, the bus's store and
the calls. Every process that seals or opens (:class:`~cluster.key_follower.KeyFollower`)
calls :meth:`KeysActor.sync` about once a second; ``raybus keys`` calls the steps.

Where the keys are: in this actor's memory, and in the cluster's control store (Ray's
GCS key-value store) so that a restarted actor takes up the latest state instead of the
configuration's (processes that already applied a newer version would otherwise be
handed an older one). Ray already keeps the bus's configuration, keys included, there
to restart its control actors: both stay inside the cluster's trust boundary, unlike
the brokers, which only ever carry sealed messages.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

import ray
from ray.experimental import internal_kv

from actors.keys import DEFAULT_LEASE_S, KeyringState, KeyRotation
from cluster.encryption import EncryptionConfig
from cluster.naming import NAMESPACE
from cluster.ray_actors.restarts import restarted

__all__ = ["KeysActor", "forget_keys", "store_key"]

logger = logging.getLogger(__name__)


def store_key(bus: str) -> str:
    """Where the bus's keyring state is kept in the cluster's control store."""
    return f"raybus/{bus}/keys"


def forget_keys(bus: str) -> None:
    """Drop a stopped bus's stored keys (blocking: a control store call)."""
    if ray.is_initialized():
        internal_kv._internal_kv_del(store_key(bus), namespace=NAMESPACE)


def _initial(encryption: EncryptionConfig) -> KeyringState:
    keys = {k: base64.b64decode(v.get_secret_value()) for k, v in encryption.keys.items()}
    return KeyringState.initial(keys, encryption.key_id)


@ray.remote
class KeysActor:
    """One bus's keyring state and who follows it (see the module docstring)."""

    def __init__(self, bus: str, encryption: EncryptionConfig) -> None:
        self._bus = bus
        self._lock = asyncio.Lock()  # one step at a time: each is stored before taken
        state: KeyringState | None = None
        settle_s = 0.0
        if restarted():
            stored = internal_kv._internal_kv_get(store_key(bus), namespace=NAMESPACE)
            if stored is not None:
                state = KeyringState.from_json(stored)
            # The followers it knew are forgotten: hear from them before any step.
            settle_s = DEFAULT_LEASE_S
        if state is None:
            state = _initial(encryption)
            internal_kv._internal_kv_put(store_key(bus), state.to_json(), namespace=NAMESPACE)
        self._rotation = KeyRotation(state, time.monotonic, settle_s=settle_s)

    async def sync(self, member: str, applied: int) -> KeyringState | None:
        """``member`` holds version ``applied``: the newer state, or None."""
        return self._rotation.sync(member, applied)

    async def leave(self, member: str) -> None:
        self._rotation.leave(member)

    async def describe(self) -> dict[str, Any]:
        """Versions, key ids (no key material) and the live processes' versions."""
        return self._rotation.describe()

    async def add(self, key_id: str, key: bytes) -> int:
        return await self._take(lambda: self._rotation.add(key_id, key))

    async def promote(self, key_id: str) -> int:
        return await self._take(lambda: self._rotation.promote(key_id))

    async def retire(self, key_id: str, drain_s: float) -> int:
        return await self._take(lambda: self._rotation.retire(key_id, drain_s))

    async def _take(self, step: Any) -> int:
        async with self._lock:
            state: KeyringState = step()
            if state is not self._rotation.state:
                await asyncio.to_thread(
                    internal_kv._internal_kv_put,
                    store_key(self._bus),
                    state.to_json(),
                    namespace=NAMESPACE,
                )
                self._rotation.commit(state)
                logger.info("bus %s keys: %s", self._bus, state.public())
            return state.version
