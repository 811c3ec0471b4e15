"""The supervisor's resize, in order: warm spares are activated before any worker starts.

Logic only, with the supervisor's steps replaced by recorders (no Ray): what runs on a
real cluster is covered by ``test_autoscale_spares``.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from cluster.ray_actors.supervisor import SupervisorActor, _PoolState


def _supervisor(
    state: _PoolState, events: list[str], *, failing: set[str], spares_wanted: int = 0
) -> SupervisorActor:
    supervisor = object.__new__(SupervisorActor)
    supervisor._pools = {"p": state}

    async def activate_spare(state: _PoolState) -> bool:
        name, _ = state.spares.popitem()
        events.append(f"activating {name}")
        await asyncio.sleep(0)  # an actor call: other coroutines run meanwhile
        if name in failing:
            return False
        state.workers[name] = object()
        events.append(f"activated {name}")
        return True

    async def add_worker(state: _PoolState, strict: bool = False) -> None:
        name = f"new-{len(state.workers)}"
        events.append("start")
        state.workers[name] = object()

    async def stop_spare(name: str, handle: Any) -> None:
        events.append(f"stopped {name}")

    supervisor._activate_spare = activate_spare  # type: ignore[method-assign]
    supervisor._add_worker = add_worker  # type: ignore[method-assign]
    supervisor._stop_spare = stop_spare  # type: ignore[method-assign]
    supervisor._spares_wanted = lambda state: spares_wanted  # type: ignore[method-assign]
    supervisor._refill_later = lambda state: None  # type: ignore[method-assign]
    return supervisor


def _pool(workers: int, spares: int) -> _PoolState:
    bounds = SimpleNamespace(min_workers=1, max_workers=8)  # all scale() reads of it
    state = _PoolState(config=bounds, target=workers)  # type: ignore[arg-type]
    state.workers = {f"w{i}": object() for i in range(workers)}
    state.spares = {f"s{i}": object() for i in range(spares)}
    return state


async def test_spares_are_activated_before_any_worker_starts() -> None:
    events: list[str] = []
    state = _pool(workers=1, spares=2)
    supervisor = _supervisor(state, events, failing=set())
    assert await supervisor.scale("p", 5) == 5
    activations = [e for e in events if e.startswith("activated")]
    assert len(activations) == 2
    assert events.index("start") > max(events.index(a) for a in activations)
    assert events.count("start") == 2
    assert len(state.workers) == 5


async def test_a_spare_that_fails_to_activate_is_replaced_by_a_start() -> None:
    events: list[str] = []
    state = _pool(workers=1, spares=2)
    supervisor = _supervisor(state, events, failing={"s1"})
    await supervisor.scale("p", 3)
    assert events.count("start") == 1
    assert len(state.workers) == 3


async def test_a_step_smaller_than_the_spares_activates_only_what_it_needs() -> None:
    events: list[str] = []
    state = _pool(workers=1, spares=3)
    supervisor = _supervisor(state, events, failing=set(), spares_wanted=2)
    await supervisor.scale("p", 2)
    assert [e for e in events if e.startswith("activated")] == ["activated s2"]
    assert "start" not in events
    assert len(state.spares) == 2
