"""Case 6 of the fault suite: the broker itself stops and comes back mid-stream.

Each test runs its own private broker (:mod:`tests.faults.restartable`): the session's
shared one must not go away under other tests.

* Kafka keeps topics and offsets on disk: stopped and restarted under load, no request
  the client handed over is lost, none runs twice, and the stream resumes.
* moto keeps its queues in memory: a restarted endpoint has none, so requests queued at
  that moment are gone with it, by design of the endpoint. What is promised there: every
  caller hears an outcome by its deadline (none hangs), errors say what happened, and
  the bus serves again once the endpoint is back.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from cluster.client import BusClient
from cluster.services.state import default_cache_dir
from tests.cluster.bus_helpers import running_bus
from tests.faults.broker_bus import KIT_SERVER, Broker, broker_bus, echoed, lines
from tests.faults.figures import figure
from tests.faults.history import History, check
from tests.faults.restartable import RestartableKafka, RestartableSqs, halt, resume
from tests.faults.scale import scaled
from tests.waiting import wait_until
from transports.errors import BusTimeout, CallError, ConnectionClosed

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SETTLE_S = 180.0
# The client gives up this long after a call's deadline (cluster.client), plus a margin
# for a loaded machine: an outcome by then is an outcome, not a hang.
CLIENT_GRACE_S = 5.0 + 5.0
# An outcome the client raised itself: it could not hand the request to the broker.
NOT_SENT = -1
# An outcome the client raised itself: no answer by the deadline (plus its grace).
TIMED_OUT = -2
POOL = {"server": KIT_SERVER, "min_workers": 1, "max_workers": 1, "max_concurrency": 16}


async def restarted_under_load(
    client: BusClient,
    history: History,
    executions: Path,
    restart: Callable[[], Awaitable[None]],
    total: int,
    deadline_s: float,
) -> tuple[float, float]:
    """Run ``total`` calls 16 at a time; a third of the way in, ``restart()`` the broker.

    Returns when the broker was back (monotonic) and how long it was away.
    """
    numbers = itertools.count()

    async def record(key: str) -> object:
        arguments = {"path": str(executions), "token": key}
        try:
            return await client.call_tool("record", arguments, timeout_s=deadline_s)
        except BusTimeout as exc:
            raise CallError("tools/call", TIMED_OUT, str(exc)) from exc
        except ConnectionClosed as exc:
            raise CallError("tools/call", NOT_SENT, str(exc)) from exc

    async def caller(number: int) -> None:
        while next(numbers) < total:
            await history.call(number, record, deadline_s=deadline_s, answer_of=echoed)

    load = asyncio.gather(*(caller(i) for i in range(16)))

    def a_third_answered() -> bool:
        return sum(op.answered for op in history.operations.values()) >= total // 3

    await wait_until(a_third_answered, timeout_s=SETTLE_S)
    stopped_at = time.monotonic()
    await restart()
    back_at = time.monotonic()
    await load
    return back_at, back_at - stopped_at


def report(kind: str, history: History, executions: Path, back_at: float, away_s: float) -> None:
    verdict = check(history, executions=Counter(lines(executions)), grace_s=CLIENT_GRACE_S)
    first_ok_after = min(
        (
            op.outcomes[0][2]
            for op in history.operations.values()
            if op.outcomes and op.outcomes[0][0] == "ok" and op.invoked_at >= back_at
        ),
        default=float("nan"),
    )
    figure(
        f"\n{kind} restart: {verdict}; away {away_s:.1f} s; "
        f"first answer after it came back: {first_ok_after - back_at:.2f} s"
    )


@pytest.mark.kafka
async def test_a_kafka_broker_restarted_mid_stream_loses_no_request_it_acknowledged(
    ray_session: None, tmp_path: Path
) -> None:
    kafka = RestartableKafka(default_cache_dir())
    await kafka.start()
    try:
        config = broker_bus(Broker("kafka", kafka.bootstrap), POOL)
        executions = tmp_path / "executions"
        total = scaled(300, 5000)
        async with running_bus(config) as client:
            history = History()

            async def restart() -> None:
                assert kafka.launched is not None
                await halt(kafka)
                await resume(kafka, kafka.launched)

            # Long enough for the broker's stop and start: callers wait it out.
            back_at, away_s = await restarted_under_load(
                client, history, executions, restart, total, deadline_s=90
            )
            report("kafka", history, executions, back_at, away_s)
            verdict = check(history, executions=Counter(lines(executions)))
            assert verdict.clean, verdict
            # Only a request the client could not hand over may fail, and it says so.
            assert set(verdict.errors) <= {NOT_SENT}, verdict
            acknowledged = verdict.total - verdict.errors[NOT_SENT]
            assert verdict.ok == acknowledged
            assert len(lines(executions)) == verdict.ok  # each ran once
    finally:
        await kafka.stop()


@pytest.mark.sqs
async def test_a_restarted_sqs_endpoint_leaves_no_caller_hanging_and_the_bus_serves_again(
    ray_session: None, tmp_path: Path
) -> None:
    moto = RestartableSqs()
    await moto.start()
    try:
        config = broker_bus(Broker("sqs", moto.endpoint), POOL)
        executions = tmp_path / "executions"
        total = scaled(300, 5000)
        async with running_bus(config) as client:
            history = History()

            async def restart() -> None:
                assert moto.launched is not None
                await halt(moto)
                await resume(moto, moto.launched)

            back_at, away_s = await restarted_under_load(
                client, history, executions, restart, total, deadline_s=20
            )
            report("sqs", history, executions, back_at, away_s)
            runs = Counter(lines(executions))
            verdict = check(history, executions=runs, grace_s=CLIENT_GRACE_S)
            # Every caller heard an outcome by its deadline; nothing crossed or ran twice.
            # A request moto held when it stopped is gone: its caller's deadline says so.
            assert verdict.clean, verdict
            assert set(verdict.errors) <= {TIMED_OUT, NOT_SENT}, verdict
            # Each answered call ran once; a timed-out one may have run (its answer lost).
            assert verdict.ok <= len(runs) <= verdict.ok + verdict.errors[TIMED_OUT]

            # Once the endpoint is back, the bus serves again.
            async def served() -> bool:
                try:
                    result = await client.call_tool("echo", {"text": "back"}, timeout_s=10)
                except (CallError, BusTimeout, ConnectionClosed):
                    return False
                return bool(echoed(result) == "back")

            async with asyncio.timeout(SETTLE_S):
                while not await served():  # noqa: ASYNC110 - the bus's state
                    await asyncio.sleep(0.5)
    finally:
        await moto.stop()
