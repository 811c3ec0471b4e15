"""The keys actor on a real Ray: a restart resumes the rotated state, never the config's."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid

import pytest
import ray
from ray.exceptions import RayError, RayTaskError

from actors.keys import RotationRefused
from cluster.encryption import EncryptionConfig
from cluster.naming import NAMESPACE, actor_names
from cluster.ray_actors.keys import KeysActor, forget_keys

pytestmark = [pytest.mark.ray]


async def test_a_restarted_keys_actor_resumes_the_rotated_state_and_waits_to_be_followed(
    ray_session: None,
) -> None:
    bus = f"t{uuid.uuid4().hex[:8]}"
    config = EncryptionConfig(key_id="k1", keys={"k1": base64.b64encode(os.urandom(32)).decode()})
    actor = KeysActor.options(  # type: ignore[attr-defined]
        name=actor_names.keys(bus), namespace=NAMESPACE, max_restarts=1, num_cpus=0
    ).remote(bus, config)
    try:
        assert await actor.sync.remote("worker", 0) is not None  # version 0: the whole state
        added = await actor.add.remote("k2", os.urandom(32))
        await actor.sync.remote("worker", added)
        promoted = await actor.promote.remote("k2")
        assert (added, promoted) == (2, 3)

        ray.kill(actor, no_restart=False)  # as if its process died: Ray restarts it
        refusal = await _first_refusal_after_restart(actor)
        assert "restarted" in refusal  # no step before its followers were heard again
        described = await actor.describe.remote()
        assert (described["version"], described["current"]) == (3, "k2")
        assert described["keys"] == ["k1", "k2"]
        # A follower at the rotated version is not handed anything older.
        assert await actor.sync.remote("worker", promoted) is None
    finally:
        ray.kill(actor, no_restart=True)
        await asyncio.to_thread(forget_keys, bus)


async def _first_refusal_after_restart(actor: object) -> str:
    """Ask for a step until the restarted incarnation refuses it (the dying one may still
    answer, or nobody while Ray restarts it); bounded."""
    async with asyncio.timeout(120):
        while True:
            try:
                await actor.retire.remote("k1", 0.0)  # type: ignore[attr-defined]
            except RayTaskError as exc:
                if isinstance(exc.cause, RotationRefused) and "restarted" in str(exc.cause):
                    return str(exc.cause)
            except RayError:
                pass  # restarting: nobody answers yet
            await asyncio.sleep(0.2)  # polling an actor Ray is restarting
