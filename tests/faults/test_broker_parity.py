"""Case 9 of the fault suite: on Kafka and SQS, calls skip the router, yet get what it gives.

* A failing pool's breaker opens and its callers are failed fast (1003), without their
  requests reaching the broker; after the cooldown a probe closes it again. The breaker
  lives in each client (:mod:`actors.broker_calls` says why).
* A cancelled call stops its tool on the worker (the testkit's ``nap`` leaves a marker
  when cancelled), and one cancelled before any worker took it never runs.
* A request whose deadline passed while it waited in the broker is answered "deadline
  exceeded" (1001) by the worker that takes it, without reaching the server.
* Broker lag grows a pool, and wakes one scaled to zero (no warm spare) end to end.

Every load goes through the shared checker (:mod:`tests.faults.history`).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cluster.bus import bus_status
from cluster.client import BusClient
from cluster.naming import actor_names, get_actor
from tests.cluster.bus_helpers import running_bus
from tests.faults.broker_bus import (
    BROKERS,
    KIT_SERVER,
    Broker,
    PoolLoad,
    broker_bus,
    broker_of,
    echoed,
    eventually,
    lines,
    within_deadline,
)
from tests.faults.figures import figure
from tests.faults.history import History, check
from tests.faults.scale import scaled
from tests.waiting import wait_until
from transports.errors import BusErrorCode, CallError

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Bounds on waiting, sized for a cold, loaded 2-core machine: they stop a hang, they
# measure nothing (the figures are printed for the report).
SETTLE_S = 120.0


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> Broker:
    return broker_of(request)


async def test_a_failing_pools_breaker_opens_in_the_client_and_fails_callers_fast(
    ray_session: None, broker: Broker, tmp_path: Path
) -> None:
    # A stdio server: `die` ends its process, and each such call is a pool fault (1007).
    pool = {
        "command": [sys.executable, "-m", "cluster.examples.testkit"],
        "min_workers": 1,
        "max_workers": 1,
        "max_concurrency": 4,
    }
    # Long enough that the fast-failed load lands inside the open state on any machine.
    breaker = {"minimum_calls": 3, "failure_rate_threshold": 0.75, "open_cooldown_s": 8.0}
    config = broker_bus(broker, pool, router={"breaker": {**breaker, "window_s": 60}})
    executions = tmp_path / "executions"
    refused = scaled(100, 2000)
    async with running_bus(config) as client:
        assert echoed(await client.call_tool("echo", {"text": "up"}, timeout_s=SETTLE_S)) == "up"
        for _ in range(3):
            with pytest.raises(CallError) as crashed:
                await client.call_tool("die", timeout_s=SETTLE_S)
            assert crashed.value.code == BusErrorCode.UPSTREAM_FAILED

        history = History()

        async def record(key: str) -> object:
            arguments = {"path": str(executions), "token": key}
            return await within_deadline(client.call_tool("record", arguments, timeout_s=30))

        started = time.monotonic()
        calls = (history.call(i, record, deadline_s=30, answer_of=echoed) for i in range(refused))
        await asyncio.gather(*calls)
        refused_in_s = time.monotonic() - started
        verdict = check(history)
        figure(f"{broker.kind} breaker open: {verdict}; all refused in {refused_in_s:.3f} s")
        assert verdict.clean, verdict
        assert verdict.errors == {BusErrorCode.CIRCUIT_OPEN: refused}
        assert lines(executions) == []  # none of them reached a worker

        # After the cooldown one probe reaches the (restarted) server and closes it.
        probes = History()

        async def echo(key: str) -> object:
            return await within_deadline(client.call_tool("echo", {"text": key}, timeout_s=30))

        async def closed() -> bool:
            await probes.call(0, echo, deadline_s=30, answer_of=echoed)
            last = list(probes.operations.values())[-1]
            return bool(last.outcomes) and last.outcomes[0][0] == "ok"

        await eventually(closed, SETTLE_S)
        probe_verdict = check(probes)
        figure(f"{broker.kind} until closed: {probe_verdict}")
        assert probe_verdict.clean, probe_verdict
        refusals = {BusErrorCode.CIRCUIT_OPEN, BusErrorCode.UPSTREAM_FAILED}
        assert set(probe_verdict.errors) <= refusals, probe_verdict


async def test_a_cancelled_call_stops_its_tool_on_the_worker_and_a_queued_one_never_runs(
    ray_session: None, broker: Broker, tmp_path: Path
) -> None:
    # The testkit plus a read-only probe, whose calls skip the ledger the cancel marks.
    server = "tests.cluster.read_only_probe:server"
    pool = {"server": server, "min_workers": 1, "max_workers": 1, "max_concurrency": 4}
    config = broker_bus(broker, pool)
    markers = [tmp_path / f"cancelled-{i}" for i in range(3)]
    leaver_marker = tmp_path / "leaver"
    executions = tmp_path / "executions"
    echoes = scaled(200, 4000)
    async with running_bus(config) as client:
        load = PoolLoad(config)
        assert echoed(await client.call_tool("echo", {"text": "up"}, timeout_s=SETTLE_S)) == "up"
        # A second client holds the pool's fourth slot and then goes away.
        leaver = await BusClient.connect(config.name)
        naps = [
            asyncio.ensure_future(
                caller.call_tool("nap", {"seconds": 600, "marker": str(m)}, timeout_s=900)
            )
            for caller, m in [*((client, m) for m in markers), (leaver, leaver_marker)]
        ]

        async def all_slots_held() -> bool:
            return (await load.read())[1] >= len(naps)

        await eventually(all_slots_held, SETTLE_S)
        # These wait in the broker: no slot is free. The second is read-only: no ledger.
        queued = [
            asyncio.ensure_future(
                client.call_tool(tool, {"path": str(executions), "token": tool}, timeout_s=900)
            )
            for tool in ("record", "record_read_only")
        ]
        link: Any = client._connection.link  # its calls in flight: published (or publishing)
        await wait_until(lambda: len(link.calls.in_flight()) == len(markers) + len(queued))
        for call in queued:
            call.cancel()
        history = History()

        async def echo(key: str) -> object:
            return await within_deadline(client.call_tool("echo", {"text": key}, timeout_s=60))

        cancelled_at = time.monotonic()
        for nap in naps[: len(markers)]:
            nap.cancel()
        # Other callers' load runs on, through the slots the cancelled tools free.
        load_done = asyncio.ensure_future(
            asyncio.gather(
                *(history.call(i, echo, deadline_s=60, answer_of=echoed) for i in range(echoes))
            )
        )
        await wait_until(lambda: all(m.exists() for m in markers), timeout_s=SETTLE_S)
        stopped_in_s = time.monotonic() - cancelled_at
        await load_done
        verdict = check(history)
        figure(f"{broker.kind} cancel: tools stopped {stopped_in_s:.2f} s after; load {verdict}")
        assert verdict.clean, verdict
        assert verdict.ok == echoes
        # A client that disconnects cancels what it still has running.
        await leaver.close()
        await wait_until(leaver_marker.exists, timeout_s=SETTLE_S)

        async def idle() -> bool:
            return await load.read() == (0, 0)

        await eventually(idle, SETTLE_S)
        assert lines(executions) == []  # the queued calls were withdrawn before they ran
        await asyncio.gather(*naps, *queued, return_exceptions=True)


async def test_a_request_that_expired_in_the_broker_is_answered_1001_without_running(
    ray_session: None, broker: Broker, tmp_path: Path
) -> None:
    slots = 4
    pool = {"server": KIT_SERVER, "min_workers": 1, "max_workers": 1, "max_concurrency": slots}
    config = broker_bus(broker, pool)
    executions = tmp_path / "executions"
    late_calls = scaled(40, 400)
    async with running_bus(config) as client:
        load = PoolLoad(config)
        assert echoed(await client.call_tool("echo", {"text": "up"}, timeout_s=SETTLE_S)) == "up"
        # The pool's slots are held for 3 s; the calls behind them may wait 0.5 s. (Each
        # expired one still takes a slot for its answer: more slots answer them sooner.)
        holders = [
            asyncio.ensure_future(client.call_tool("nap", {"seconds": 3}, timeout_s=SETTLE_S))
            for _ in range(slots)
        ]

        async def slots_held() -> bool:
            return (await load.read())[1] >= slots

        await eventually(slots_held, SETTLE_S)
        history = History()

        async def record(key: str) -> object:
            arguments = {"path": str(executions), "token": key}
            return await within_deadline(client.call_tool("record", arguments, timeout_s=0.5))

        await asyncio.gather(
            *(history.call(i, record, deadline_s=0.5, answer_of=echoed) for i in range(late_calls))
        )
        await asyncio.gather(*holders)
        verdict = check(history)
        answered_after = [
            op.outcomes[0][2] - op.invoked_at for op in history.operations.values() if op.outcomes
        ]
        figure(
            f"\n{broker.kind} expired: {verdict}; answered after "
            f"{min(answered_after):.2f}-{max(answered_after):.2f} s"
        )
        assert verdict.clean, verdict
        assert verdict.errors == {BusErrorCode.DEADLINE_EXCEEDED: late_calls}
        assert lines(executions) == []  # the server never saw them


async def test_broker_lag_grows_the_pool_and_wakes_it_from_zero(
    ray_session: None, broker: Broker, tmp_path: Path
) -> None:
    pool = {
        "server": KIT_SERVER,
        "min_workers": 0,
        "max_workers": 2,
        "max_concurrency": 4,
        "warm_spares": 0,  # a wake-up starts a worker for real
        "autoscale": {"target_per_worker": 4, "upscale_delay_s": 0.5, "downscale_window_s": 2},
    }
    config = broker_bus(broker, pool, autoscaler={"enabled": True, "interval_s": 0.25})
    executions = tmp_path / "executions"
    calls = scaled(120, 2000)

    async def workers() -> int:
        count: int = (await bus_status(config.name))["pools"]["kit"]["workers"]
        return count

    async with running_bus(config) as client:
        # The pool has served once, so its catalog is known; then it scales to zero.
        supervisor = get_actor(actor_names.supervisor(config.name))
        await supervisor.scale.remote("kit", 1)

        async def catalog_known() -> bool:
            return "echo" in {tool.name for tool in await client.list_tools()}

        await eventually(catalog_known, SETTLE_S)
        assert echoed(await client.call_tool("echo", {"text": "up"}, timeout_s=SETTLE_S)) == "up"

        async def at_zero() -> bool:
            # The supervisor's own count: a status row can read 0 for a moment while a
            # live worker's heartbeat is late, and the pool has not scaled down then.
            sizes = (await supervisor.pools.remote())["kit"]
            return (sizes["target"], sizes["workers"], sizes["starting"]) == (0, 0, 0)

        await eventually(at_zero, SETTLE_S)
        history = History()

        async def record(key: str) -> object:
            arguments = {"path": str(executions), "token": key, "seconds": 0.5}
            return await within_deadline(client.call_tool("record", arguments, timeout_s=SETTLE_S))

        started = time.monotonic()
        burst = asyncio.ensure_future(
            asyncio.gather(
                *(
                    history.call(i, record, deadline_s=SETTLE_S, answer_of=echoed)
                    for i in range(calls)
                )
            )
        )
        reached: dict[int, float] = {}  # pool size -> seconds after the burst began

        async def sizes_until_done() -> None:
            while not burst.done():
                reached.setdefault(await workers(), time.monotonic() - started)
                await asyncio.sleep(0.25)  # sampling the pool's size for the report

        sampler = asyncio.ensure_future(sizes_until_done())
        await burst
        await sampler
        verdict = check(history)
        decisions = [
            (d["current"], d["desired"])
            for d in (await bus_status(config.name))["decisions"]
            if d["pool"] == "kit"
        ]
        figure(f"{broker.kind} wake: {verdict}; size reached after (s): {reached}; {decisions}")
        assert verdict.clean, verdict
        assert verdict.ok == calls
        assert sorted(lines(executions)) == sorted(history.operations)
        # The lag woke the pool from zero and grew it to its maximum.
        assert any(current == 0 and desired >= 1 for current, desired in decisions), decisions
        assert any(desired == 2 for _, desired in decisions), decisions
