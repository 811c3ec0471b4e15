"""Issue 22: an edge client rides out an outage of its bus; every call runs once.

A Kafka bus runs a pool of ``tests.faults.fault_server`` (its ``append`` tool writes the
key it was given to a file: one line per run). A gateway with a bearer token serves it
on a fixed loopback port. The link is cut by stopping the gateway (the port then refuses
connections), 500 calls are journaled while it is down, the gateway comes back on the
same port, and every call is answered, to its own caller, having run exactly once.

Restart variant: a child process journals the 500 calls while the gateway is down and
dies with ``os._exit``; this process opens the same journal and collects all 500 answers
from ``unclaimed()``.

These cuts happen before any call left. A gateway killed *while calls run* and a broker
halted under the gateway leave calls whose fate the edge cannot know: it resends them
with their idempotency keys and the bus's ledger runs each key once (README
"Idempotency keys").
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from cluster.bus import launch_bus, stop_bus
from cluster.config import BusConfig
from cluster.gateway.listener import GatewayBindError, bind_listener
from cluster.gateway.policy.tokens import hash_token
from cluster.services.state import default_cache_dir
from tests.cluster.bus_helpers import bus_config, serving_replica_pid
from tests.faults.restartable import RestartableKafka, halt, resume
from tests.waiting import wait_until
from transports.edge import EdgeClient, EdgeSettings, LinkState

pytestmark = [
    pytest.mark.ray,
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
]

TOKEN = "edge-outage-token-0123456789abcdef"
CALLS = 500
# Bounds for a cold, loaded 2-core machine: they stop a hang, they measure nothing.
_GATEWAY_S = 180.0
_LINK_S = 60.0
_ALL_S = 240.0
_CHILD_S = 120.0
# A restored gateway is found within ~2 s; the 0.5 s -> 30 s schedule is unit-tested.
SETTINGS = EdgeSettings(backoff_first_s=0.2, backoff_max_s=2.0)


@pytest.fixture(scope="module")
def config(kafka_bootstrap: str) -> BusConfig:
    pool = {"name": "faults", "server": "tests.faults.fault_server:server", "min_workers": 1}
    policy = {"tokens": [{"principal": "device", "sha256": hash_token(TOKEN)}]}
    kafka = {"bootstrap": kafka_bootstrap, "partitions": 2}
    return bus_config([pool], backend="kafka", kafka=kafka, gateway={"policy": policy})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bus(config: BusConfig, ray_session: None) -> AsyncIterator[BusConfig]:
    await launch_bus(config)
    try:
        yield config
    finally:
        await stop_bus(config.name)


class Gateway:
    """``raybus up``'s gateway for a bus already running, stopped and served again on
    one fixed port (the bus keeps running while it is down)."""

    def __init__(self, config: BusConfig) -> None:
        self._config = config
        sock = bind_listener(config.gateway.host, 0)
        self.port = int(sock.getsockname()[1])
        sock.close()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from cluster.cli.up import serve  # the HTTP stack: only here

        sock = await self._bind()
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(
            serve(self._config, stdio=False, ready=ready.set_result, stop=self._stop, sock=sock)
        )
        async with asyncio.timeout(_GATEWAY_S):
            assert await asyncio.shield(ready) == self.port

    async def stop(self) -> None:
        assert self._stop is not None
        assert self._task is not None
        self._stop.set()
        async with asyncio.timeout(_GATEWAY_S):
            await self._task
        self._task = None

    async def _bind(self) -> Any:
        # The stopped replica's process may hold the port for a moment after it ends.
        async with asyncio.timeout(_GATEWAY_S):
            while True:
                try:
                    return bind_listener(self._config.gateway.host, self.port)
                except GatewayBindError:
                    await asyncio.sleep(0.2)


@pytest_asyncio.fixture(loop_scope="module")
async def gateway(bus: BusConfig) -> AsyncIterator[Gateway]:
    served = Gateway(bus)
    await served.start()
    try:
        yield served
    finally:
        if served._task is not None:
            await served.stop()


async def link(edge: EdgeClient, state: LinkState) -> None:
    async with asyncio.timeout(_LINK_S):
        await edge.wait_for_link(state)


def answered_key(result: dict[str, Any]) -> str:
    return str(result["structuredContent"]["result"])


def runs_of(path: Path) -> Counter[str]:
    return Counter(path.read_text().split()) if path.exists() else Counter()


async def test_500_calls_journaled_while_the_gateway_is_down_each_run_once(
    gateway: Gateway, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    path = tmp_path / "edge.db"
    async with EdgeClient.open(path, url=gateway.url, token=TOKEN, settings=SETTINGS) as edge:
        await link(edge, LinkState.UP)
        await gateway.stop()
        keys = [f"k{i:03d}" for i in range(CALLS)]
        submits = (edge.submit("append", {"key": k, "path": str(runs)}) for k in keys)
        calls = await asyncio.gather(*submits)
        await link(edge, LinkState.DOWN)
        assert edge.link.unanswered == CALLS
        assert runs_of(runs) == Counter()
        await gateway.start()
        async with asyncio.timeout(_ALL_S):
            results = await asyncio.gather(*(call.result() for call in calls))
        assert [answered_key(r) for r in results] == keys  # each caller, its own answer
        assert edge.link.unanswered == 0
    assert runs_of(runs) == Counter(keys)  # every key exactly once


async def test_calls_journaled_by_a_process_that_died_are_answered_after_restart(
    gateway: Gateway, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    path = tmp_path / "edge.db"
    await gateway.stop()
    argv = [str(path), gateway.url, TOKEN, str(runs), str(CALLS)]
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.cluster.edge.edge_child",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(_CHILD_S):
        out, err = await child.communicate()
    assert child.returncode == 0, err.decode()[-4000:]
    submitted: list[str] = json.loads(out.decode().strip().splitlines()[-1])
    assert len(submitted) == CALLS
    async with EdgeClient.open(path, url=gateway.url, token=TOKEN, settings=SETTINGS) as edge:
        assert edge.link.unanswered == CALLS
        await gateway.start()
        answers: dict[str, str] = {}
        async with asyncio.timeout(_ALL_S):
            async for outcome in edge.unclaimed(follow=True):
                assert outcome.error is None, outcome.error
                assert outcome.result is not None
                answers[outcome.request_id] = answered_key(outcome.result)
                await outcome.claim()
                if len(answers) == CALLS:
                    break
        assert answers == {rid: f"r{i:03d}" for i, rid in enumerate(submitted)}
        assert [o async for o in edge.unclaimed()] == []
    assert runs_of(runs) == Counter(f"r{i:03d}" for i in range(CALLS))


async def test_a_gateway_killed_while_calls_run_still_runs_each_once(
    gateway: Gateway, bus: BusConfig, tmp_path: Path
) -> None:
    """The gateway's process is killed while 50 calls run (rows ``sending``: they may
    have run); ``raybus up``'s keeper replaces it on the same port, the edge resends them
    with their keys, and the bus's ledger runs each key once."""
    runs = tmp_path / "runs"
    path = tmp_path / "edge.db"
    settings = EdgeSettings(max_in_flight=64, backoff_first_s=0.2, backoff_max_s=2.0)
    async with EdgeClient.open(path, url=gateway.url, token=TOKEN, settings=settings) as edge:
        await link(edge, LinkState.UP)
        pid = await serving_replica_pid(bus.name)
        assert pid is not None
        keys = [f"m{i:03d}" for i in range(50)]
        # Each run appends first, then works 5 s: the kill lands while they run.
        arguments = ({"key": k, "path": str(runs), "seconds": 5.0} for k in keys)
        calls = await asyncio.gather(*(edge.submit("append", a) for a in arguments))
        await wait_until(lambda: bool(runs_of(runs)), _LINK_S)
        os.kill(pid, signal.SIGKILL)
        await link(edge, LinkState.DOWN)
        async with asyncio.timeout(_ALL_S):
            results = await asyncio.gather(*(call.result() for call in calls))
        assert [answered_key(r) for r in results] == keys
    assert runs_of(runs) == Counter(keys)


async def test_500_calls_sent_while_the_broker_is_down_each_run_once(
    ray_session: None, tmp_path: Path
) -> None:
    """The bus's Kafka broker halts (the gateway still answers): the calls reach the
    gateway and fail there as "not sent" (1006) or "not confirmed" (1004), both resent
    with their keys after a backoff, until the broker is back."""
    kafka = RestartableKafka(default_cache_dir())
    await kafka.start()
    runs = tmp_path / "runs"
    try:
        pool = {"name": "faults", "server": "tests.faults.fault_server:server", "min_workers": 1}
        policy = {"tokens": [{"principal": "device", "sha256": hash_token(TOKEN)}]}
        kafka_settings = {"bootstrap": kafka.bootstrap, "partitions": 2}
        config = bus_config(
            [pool], backend="kafka", kafka=kafka_settings, gateway={"policy": policy}
        )
        await launch_bus(config)
        served = Gateway(config)
        await served.start()
        try:
            path = tmp_path / "edge.db"
            edge = await EdgeClient.open(path, url=served.url, token=TOKEN, settings=SETTINGS)
            async with edge:
                await link(edge, LinkState.UP)
                assert kafka.launched is not None
                await halt(kafka)
                keys = [f"b{i:03d}" for i in range(CALLS)]
                submits = (edge.submit("append", {"key": k, "path": str(runs)}) for k in keys)
                calls = await asyncio.gather(*submits)
                assert edge.link.unanswered == CALLS
                await resume(kafka, kafka.launched)
                async with asyncio.timeout(_ALL_S):
                    results = await asyncio.gather(*(call.result() for call in calls))
                assert [answered_key(r) for r in results] == keys
        finally:
            await served.stop()
            await stop_bus(config.name)
    finally:
        await kafka.stop()
    assert runs_of(runs) == Counter(keys)
