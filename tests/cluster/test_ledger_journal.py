"""Keyed ledger entries survive a restart of the ledger actor (``idempotency.durable``):
journaled to the GCS key-value store of the session's local Ray, reloaded by the
restarted actor; a first start of a bus's ledger clears what an earlier bus left."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest
import ray

from cluster.ray_actors.ledger import LedgerActor
from cluster.ray_actors.ledger_journal import JournalEntry, delete_ledger_journal
from cluster.ray_actors.restarts import CONTROL_ACTOR_OPTIONS

pytestmark = pytest.mark.ray


def ledger(bus: str, *, durable: bool) -> Any:
    options = {**CONTROL_ACTOR_OPTIONS, "name": f"test-ledger-{uuid.uuid4().hex[:8]}"}
    return LedgerActor.options(**options).remote(  # type: ignore[attr-defined]
        600.0, 1000, 86_400.0, 1000, bus, durable
    )


async def pid_of(actor: Any) -> int:
    pid: int = await actor.__ray_call__.remote(lambda _: os.getpid())
    return pid


async def kill_and_await_restart(actor: Any) -> None:
    """Kill the actor (Ray restarts it) and wait until its *new* process answers. The kill
    is asynchronous: the dying process may still answer a call, with its memory intact."""
    before = await pid_of(actor)
    ray.kill(actor, no_restart=False)
    while True:
        try:
            if await pid_of(actor) != before:
                return
        except ray.exceptions.RayActorError:  # unavailable or died: restarting
            pass
        await asyncio.sleep(0.1)  # polling the restart, bounded by the caller


def test_an_entry_round_trips_through_its_json() -> None:
    done = JournalEntry("k\x1fship-7\x1forder-1", "d", 1_700_000_000.5, b"\x00answer\xff")
    running = JournalEntry("k\x1fship-7\x1forder-2", "d", 1_700_000_001.0, None)
    assert JournalEntry.from_json(done.to_json()) == done
    assert JournalEntry.from_json(running.to_json()) == running


async def test_a_restarted_ledger_keeps_its_keyed_answers_and_runs_in_progress(
    ray_session: None,
) -> None:
    bus = f"t{uuid.uuid4().hex[:8]}"
    actor = ledger(bus, durable=True)
    try:
        async with asyncio.timeout(120):
            assert (await actor.begin_keyed.remote("k1", "d1"))[0] == "new"
            await actor.complete_keyed.remote("k1", b"answer")
            assert (await actor.begin_keyed.remote("k2", "d2"))[0] == "new"
            assert (await actor.begin_keyed.remote("k3", "d3"))[0] == "new"
            await actor.abandon_keyed.remote("k3")
            await kill_and_await_restart(actor)  # Ray restarts it (max_restarts=-1)
            assert await actor.begin_keyed.remote("k1", "d1") == ("done", b"answer")
            assert await actor.begin_keyed.remote("k1", "other") == ("conflict", None)
            assert await actor.begin_keyed.remote("k2", "d2") == ("in_progress", None)
            assert (await actor.begin_keyed.remote("k3", "d3"))[0] == "new"  # given back
    finally:
        ray.kill(actor, no_restart=True)
        delete_ledger_journal(bus)


async def test_without_durable_a_restart_forgets_and_a_first_start_clears_the_bus(
    ray_session: None,
) -> None:
    bus = f"t{uuid.uuid4().hex[:8]}"
    forgetful = ledger(bus, durable=False)
    first = ledger(bus, durable=True)
    try:
        async with asyncio.timeout(120):
            assert (await forgetful.begin_keyed.remote("k", "d"))[0] == "new"
            await forgetful.complete_keyed.remote("k", b"answer")
            await kill_and_await_restart(forgetful)
            assert (await forgetful.begin_keyed.remote("k", "d"))[0] == "new"
            assert (await first.begin_keyed.remote("k", "d"))[0] == "new"
            await first.complete_keyed.remote("k", b"answer")
            ray.kill(first, no_restart=True)
            second = ledger(bus, durable=True)  # a new bus of the same name
            assert (await second.begin_keyed.remote("k", "d"))[0] == "new"
            ray.kill(second, no_restart=True)
    finally:
        ray.kill(forgetful, no_restart=True)
        delete_ledger_journal(bus)
