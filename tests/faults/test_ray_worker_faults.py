"""Worker faults on the Ray backend under steady load (issue 18, cases 1, 2, 4, 5, 8).

One bus serves every case: a pool of two workers hosting the fault server
(:mod:`tests.faults.fault_server`) and a stdio pool (the testkit as a child process).
Each case waits until the pool is whole again (the previous case's replacement) before
it starts, injects its fault from the test (``ray.kill``, a signal, a misbehaving tool)
and checks the shared history: nothing lost, crossed, hung or duplicated, and only the
error codes the case allows. Each case prints its figures (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from cluster.client import BusClient, CallError
from cluster.naming import actor_names, get_actor
from tests.cluster.bus_helpers import bus_config, running_bus
from tests.faults.figures import figure
from tests.faults.history import History, Verdict, check
from tests.faults.ray_load import (
    Fault,
    Request,
    count_responses,
    in_flight_at,
    kill_busy_worker,
    latencies,
    percentile,
    steady_load,
    tool_request,
    wait_for_pool,
)
from tests.faults.scale import scaled
from transports.errors import BusErrorCode

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

POOL = "faults"
WORKERS = 2
MAX_CONCURRENCY = 4  # calls one worker holds: what a kill can catch in flight
STDIO_POOL = "kit"
CALLERS = 8
WORK_S = 0.05  # each call's own work: long enough that a kill finds calls in flight
DEADLINE_S = 30.0  # generous for a loaded 2-core machine; an outcome must come before
TTL_S = 3.0  # discovery's: a silent worker is evicted (and, blocked, killed) after it
MAY_HAVE_RUN = BusErrorCode.OUTCOME_UNKNOWN

Responses = dict[tuple[str, str], list[str]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bus(ray_session: None) -> AsyncIterator[BusClient]:
    config = bus_config(
        [
            {
                "name": POOL,
                "server": "tests.faults.fault_server:server",
                "min_workers": WORKERS,
                "max_workers": WORKERS,
                "max_concurrency": MAX_CONCURRENCY,
            },
            {"name": STDIO_POOL, "command": [sys.executable, "-m", "cluster.examples.testkit"]},
        ],
        discovery={"heartbeat_interval_s": 0.2, "ttl_s": TTL_S},
    )
    async with running_bus(config) as client:
        yield client


@pytest.fixture
def responses() -> Iterator[Responses]:
    with count_responses() as seen:
        yield seen


def figures(case: str, verdict: Verdict, **extra: object) -> None:
    shown = " ".join(
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()
    )
    figure(f"FIGURES {case}: {verdict} {shown}")


def duplicate_responses(seen: Responses) -> list[list[str]]:
    """The requests a client was sent more than one response for (each one's responses).

    The client keeps the first and drops the rest: its caller sees one outcome (the
    history checks that). Only a call the killed worker held can get two: its answer may
    have left the worker before the router, told of finished calls with the worker's next
    batch, saw it end; the router then re-runs it (read-only) or answers 1004.
    """
    return [outcomes for outcomes in seen.values() if len(outcomes) > 1]


def only_the_victims_calls_were_answered_twice(seen: Responses) -> bool:
    twice = duplicate_responses(seen)
    return len(twice) <= MAX_CONCURRENCY and all(
        set(outcomes) <= {"ok", str(int(MAY_HAVE_RUN))} for outcomes in twice
    )


async def test_a_worker_killed_mid_call_leaves_every_caller_an_outcome_and_is_replaced(
    bus: BusClient, responses: Responses
) -> None:
    await wait_for_pool(bus, POOL, WORKERS)
    history = History()
    requests = scaled(300, 3000)

    def request_of(caller: int) -> Request:
        # Even callers ask a read-only tool (re-queued after the loss: must succeed),
        # odd ones a tool not declared safe to repeat (its lost calls answer 1004).
        tool = "lookup" if caller % 2 == 0 else "say"
        return tool_request(bus, tool, {"seconds": WORK_S}, DEADLINE_S)

    kill = await steady_load(
        history,
        request_of,
        requests=requests,
        callers=CALLERS,
        deadline_s=DEADLINE_S,
        fault=lambda: kill_busy_worker(bus, POOL),
    )
    replaced_at = await wait_for_pool(bus, POOL, WORKERS, without=kill.target)
    verdict = check(history)
    affected = in_flight_at(history, kill.at)
    to_outcome = max((op.outcomes[0][2] - kill.at for op in affected if op.outcomes), default=0.0)
    figures(
        "1 killed worker",
        verdict,
        in_flight_at_kill=len(affected),
        worst_outcome_after_kill_s=to_outcome,
        replaced_after_s=replaced_at - kill.at,
        duplicate_responses=duplicate_responses(responses),
    )
    assert verdict.clean, verdict
    assert verdict.total == requests
    assert set(verdict.errors) <= {MAY_HAVE_RUN}, verdict
    safe = [op for op in history.operations.values() if op.caller % 2 == 0]
    assert all(op.outcomes[0][0] == "ok" for op in safe), "a read-only call was not re-run"
    assert affected  # the kill did find calls in flight
    assert to_outcome <= DEADLINE_S
    assert only_the_victims_calls_were_answered_twice(responses)
    assert len(responses) == requests


async def test_a_side_effect_runs_at_most_once_and_its_caller_is_told_it_may_have_run(
    bus: BusClient, responses: Responses, tmp_path: Path
) -> None:
    await wait_for_pool(bus, POOL, WORKERS)
    runs_file = tmp_path / "runs"
    runs_file.touch()
    history = History()
    requests = scaled(240, 2400)
    # Most of each call's time comes after its side effect: a kill lands in that window.
    arguments = {"path": str(runs_file), "seconds": 4 * WORK_S}
    kill = await steady_load(
        history,
        lambda caller: tool_request(bus, "append", arguments, DEADLINE_S),
        requests=requests,
        callers=CALLERS,
        deadline_s=DEADLINE_S,
        fault=lambda: kill_busy_worker(bus, POOL),
    )
    replaced_at = await wait_for_pool(bus, POOL, WORKERS, without=kill.target)
    runs = Counter(runs_file.read_text(encoding="utf-8").split())
    verdict = check(history, executions=runs)
    outcome = {key: op.outcomes[0] for key, op in history.operations.items() if op.outcomes}
    told = [key for key, (kind, value, _) in outcome.items() if kind == "error"]
    ran_unanswered = [key for key in told if runs[key] == 1]
    figures(
        "2 side effect",
        verdict,
        runs=sum(runs.values()),
        max_runs_per_key=max(runs.values()),
        told_may_have_run=len(told),
        of_which_ran=len(ran_unanswered),
        replaced_after_s=replaced_at - kill.at,
        duplicate_responses=duplicate_responses(responses),
    )
    assert verdict.clean, verdict  # includes: no key ran twice
    assert set(verdict.errors) <= {MAY_HAVE_RUN}, verdict
    # Every answered success ran exactly once; a key that ran and got no success was told.
    assert all(runs[key] == 1 for key, (kind, _, _) in outcome.items() if kind == "ok")
    assert set(runs) <= set(outcome)
    assert ran_unanswered  # the kill did land between a side effect and its answer
    assert only_the_victims_calls_were_answered_twice(responses)


async def test_a_worker_blocking_its_event_loop_is_replaced_and_every_call_ends(
    bus: BusClient,
) -> None:
    await wait_for_pool(bus, POOL, WORKERS)
    requests = scaled(200, 2000)
    baseline = History()

    async def no_fault() -> Fault:
        return Fault(time.monotonic(), "")

    await steady_load(
        baseline,
        lambda caller: tool_request(bus, "lookup", {"seconds": WORK_S}, DEADLINE_S),
        requests=requests,
        callers=CALLERS,
        deadline_s=DEADLINE_S,
        fault=no_fault,
    )
    supervisor = get_actor(actor_names.supervisor(bus.bus))
    before = set((await supervisor.workers.remote())[POOL])
    stalled: list[tuple[str, int | str]] = []

    async def stall_a_worker() -> Fault:
        # Long enough to outlive the test by far: only a kill ends it.
        try:
            await bus.call_tool("stall", {"key": "stall", "seconds": 600}, timeout_s=DEADLINE_S)
            stalled.append(("ok", ""))
        except CallError as exc:
            stalled.append(("error", exc.code))
        return Fault(time.monotonic(), "")

    history = History()
    stall_task = asyncio.create_task(stall_a_worker())
    started = time.monotonic()
    await steady_load(
        history,
        lambda caller: tool_request(bus, "lookup", {"seconds": WORK_S}, DEADLINE_S),
        requests=requests,
        callers=CALLERS,
        deadline_s=DEADLINE_S,
        fault=no_fault,
    )
    stall_ended = await stall_task
    recovered_at = await wait_for_pool(bus, POOL, WORKERS)
    after = set((await supervisor.workers.remote())[POOL])
    verdict = check(history)
    quiet, faulty = (latencies(list(h.operations.values())) for h in (baseline, history))
    p50, p99 = (percentile(quiet, f) for f in (0.5, 0.99))
    f50, f99 = (percentile(faulty, f) for f in (0.5, 0.99))
    # The calls the blocked worker held wait for its eviction (one TTL after its last
    # heartbeat) and run again: the router gives a worker at most max_concurrency calls,
    # the stall among them. The other callers' calls are the rest: their p99 is the
    # figure to hold against the baseline's.
    held = [t for t in faulty if t >= TTL_S]
    others = [t for t in faulty if t < TTL_S]
    figures(
        "4 blocked worker",
        verdict,
        stalled_call=stalled,
        stalled_outcome_after_s=stall_ended.at - started,
        replaced_after_s=recovered_at - started,
        baseline_p50_s=p50,
        baseline_p99_s=p99,
        during_p50_s=f50,
        during_p99_s=f99,
        baseline_over_1s=sum(t > 1 for t in quiet),
        during_over_1s=sum(t > 1 for t in faulty),
        slowest_s=[round(t, 2) for t in sorted(faulty)[-8:]],
        held_calls=len(held),
        others_p50_s=percentile(others, 0.5),
        others_p99_s=percentile(others, 0.99),
    )
    assert check(baseline).clean
    assert verdict.clean, verdict
    # Calls the stalled worker held were lost with it and re-run (read-only): all ok.
    assert verdict.ok == requests, verdict
    assert stalled in ([("error", MAY_HAVE_RUN)], [("error", BusErrorCode.DEADLINE_EXCEEDED)])
    assert len(before - after) == 1  # the blocked worker was replaced, the other kept
    # Only what the blocked worker held waited for its eviction: each sender stops at the
    # worker's capacity as it counts it, so every other call went to the live one. The
    # senders are two here, the client's direct lane (the stall among its calls) and the
    # router (calls the live worker bounced): a blocked worker can neither bounce nor
    # report, so neither knows of the other's calls on it.
    assert len(held) <= 2 * MAX_CONCURRENCY - 1, sorted(faulty)[-8:]


async def test_a_poison_request_is_tried_a_bounded_number_of_times_and_fails(
    bus: BusClient, tmp_path: Path
) -> None:
    await wait_for_pool(bus, POOL, WORKERS)
    attempts_file = tmp_path / "attempts"
    history = History()
    requests = scaled(200, 2000)
    poisoned: list[int] = []

    async def send_poison() -> Fault:
        try:
            await bus.call_tool(
                "poison", {"key": "p", "path": str(attempts_file)}, timeout_s=DEADLINE_S
            )
        except CallError as exc:
            poisoned.append(exc.code)
        return Fault(time.monotonic(), "poison")

    ended = await steady_load(
        history,
        lambda caller: tool_request(bus, "lookup", {"seconds": WORK_S}, DEADLINE_S),
        requests=requests,
        callers=CALLERS,
        deadline_s=DEADLINE_S,
        fault=send_poison,
    )
    recovered_at = await wait_for_pool(bus, POOL, WORKERS)
    attempts = attempts_file.read_text(encoding="utf-8").split()
    verdict = check(history)
    figures(
        "5 poison",
        verdict,
        poison_attempts=len(attempts),
        poison_error=poisoned,
        recovered_after_poison_s=recovered_at - ended.at,
    )
    # Tried once and retried once (it is declared read-only), then "may have run".
    assert attempts == ["p", "p"]
    assert poisoned == [MAY_HAVE_RUN]
    assert verdict.clean, verdict
    # The other calls: re-run after their worker was lost, or told once retried too.
    assert set(verdict.errors) <= {MAY_HAVE_RUN}, verdict
    assert (await bus.call_tool("lookup", {"key": "after"})).structured_content == {
        "result": "after"
    }


async def test_a_crashed_stdio_server_restarts_while_other_pools_keep_serving(
    bus: BusClient,
) -> None:
    await wait_for_pool(bus, POOL, WORKERS)
    supervisor = get_actor(actor_names.supervisor(bus.bus))
    worker = get_actor((await supervisor.workers.remote())[STDIO_POOL][0])
    restarts_before = (await worker.status.remote())["restarts"]
    child = await stdio_child_pid(bus)
    assert child is not None
    history = History()
    requests = scaled(200, 2000)
    restarted: list[float] = []

    async def watch_restart() -> None:
        # Read on the worker itself: the router's breaker may refuse calls meanwhile.
        async with asyncio.timeout(60):  # the pass figure is 5 s; this bounds a hang
            while (await worker.status.remote())["restarts"] == restarts_before:  # noqa: ASYNC110 - remote state
                await asyncio.sleep(0.01)  # asking the worker again
        restarted.append(time.monotonic())

    watcher: list[asyncio.Task[None]] = []

    async def kill_the_child() -> Fault:
        os.kill(child, signal.SIGKILL)
        watcher.append(asyncio.create_task(watch_restart()))
        return Fault(time.monotonic(), str(child))

    def request_of(caller: int) -> Request:
        # Half the callers use the stdio pool (testkit's echo), half the other pool.
        if caller % 2 == 0:
            return tool_request(bus, "echo", {}, DEADLINE_S, key_argument="text")
        return tool_request(bus, "say", {"seconds": WORK_S}, DEADLINE_S)

    kill = await steady_load(
        history,
        request_of,
        requests=requests,
        callers=CALLERS,
        deadline_s=DEADLINE_S,
        fault=kill_the_child,
    )
    await watcher[0]
    async with asyncio.timeout(60):
        while await stdio_child_pid(bus) in (child, None):  # noqa: ASYNC110 - remote state
            await asyncio.sleep(0.05)  # asking the stdio pool again
    serving_again = time.monotonic()
    verdict = check(history)
    other_pool = [op for op in history.operations.values() if op.caller % 2 == 1]
    figures(
        "8 stdio child",
        verdict,
        restarted_after_s=restarted[0] - kill.at,
        served_again_after_s=serving_again - kill.at,
    )
    assert verdict.clean, verdict
    assert all(op.outcomes[0][0] == "ok" for op in other_pool)
    # Calls the dead child held or got while it restarted fail fast; enough of them may
    # open the pool's breaker, which then refuses calls for its cooldown.
    assert set(verdict.errors) <= {BusErrorCode.UPSTREAM_FAILED, BusErrorCode.CIRCUIT_OPEN}


async def stdio_child_pid(bus: BusClient) -> int | None:
    """The stdio server's process id (None while it restarts or its breaker is open)."""
    try:
        who = (await bus.call_tool("whoami")).structured_content
    except CallError as exc:
        if exc.code not in (BusErrorCode.UPSTREAM_FAILED, BusErrorCode.CIRCUIT_OPEN):
            raise
        return None
    assert who is not None
    return int(who["pid"])
